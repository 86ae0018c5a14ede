#include "http_request.h"

#include <exception>
#include <utility>

#include <spdlog/spdlog.h>

#include "engine/base/check.h"

namespace bucketd::server {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string PercentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int high = HexValue(text[i + 1]);
      int low = HexValue(text[i + 2]);
      if (high >= 0 && low >= 0) {
        out += static_cast<char>(high * 16 + low);
        i += 2;
        continue;
      }
    }
    out += plus_is_space && text[i] == '+' ? ' ' : text[i];
  }
  return out;
}

std::string AsciiLower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view TrimSpace(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::string HttpRequest::MediaType() const {
  if (!content_type) return "";
  std::string_view type = *content_type;
  return AsciiLower(TrimSpace(type.substr(0, type.find(';'))));
}

std::string_view HttpRequest::Path() const {
  std::string_view target_view = target;
  return target_view.substr(0, target_view.find('?'));
}

std::optional<std::string> HttpRequest::Query(std::string_view name) const {
  std::vector<std::string> values = QueryAll(name);
  if (values.empty()) return std::nullopt;
  return std::move(values.front());
}

std::vector<std::string> HttpRequest::QueryAll(std::string_view name) const {
  std::vector<std::string> values;
  const size_t question = target.find('?');
  if (question == std::string::npos) return values;
  std::string_view query = std::string_view(target).substr(question + 1);
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t equals = pair.find('=');
    std::string_view key = pair.substr(0, equals);
    if (PercentDecode(key, true) != name) continue;
    values.push_back(equals == std::string_view::npos
                         ? std::string()
                         : PercentDecode(pair.substr(equals + 1), true));
  }
  return values;
}

Reply JsonReply(int http_status, std::string body) {
  return {http_status, std::move(body), "application/json"};
}

Reply ErrorReply(const HttpError& error) { return JsonReply(error.http_status, ErrorBody(error)); }

Exchange::Exchange(Poster post, Responder respond)
    : post_(std::move(post)), respond_(std::move(respond)) {}

void Exchange::Post(Task task) {
  post_([self = shared_from_this(), task = std::move(task)] {
    try {
      task();
    } catch (const std::exception& e) {
      self->Fail(e.what());
    } catch (...) {
      self->Fail("unknown exception");
    }
  });
}

void Exchange::Respond(Reply reply) {
  BUCKETD_CHECK(!answered_.exchange(true));
  respond_(std::move(reply));
}

void Exchange::Fail(std::string_view what) {
  spdlog::error("event=handler_exception error=\"{}\"", what);
  if (answered_.exchange(true)) return;
  respond_(ErrorReply({kHttpUnavailable, "unavailable", "internal error", ""}));
}

}  // namespace bucketd::server
