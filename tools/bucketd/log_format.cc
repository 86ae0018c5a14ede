#include "log_format.h"

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "engine/base/json_writer.h"

namespace bucketd::server {
namespace {

constexpr const char* kTimestampPattern = "%Y-%m-%dT%H:%M:%S.%eZ";
constexpr char kJsonMessageFlag = '*';

// The message as a JSON string, quotes included: messages carry quoted values (error="...")
// and user-supplied text (file names, ids), so %v cannot go into a JSON line as it is.
// JsonWriter also replaces ill-formed UTF-8, so every line parses.
class JsonMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    JsonWriter writer;
    writer.String(std::string_view(msg.payload.data(), msg.payload.size()));
    const std::string text = writer.Take();
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessage>();
  }
};

}  // namespace

void SetUpLogging(LogFormat format) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (format == LogFormat::kJson) {
    formatter->add_flag<JsonMessage>(kJsonMessageFlag)
        .set_pattern(std::string(R"({"ts":")") + kTimestampPattern + R"(","level":"%l","msg":%*})");
  } else {
    formatter->set_pattern(std::string(kTimestampPattern) + " level=%l %v");
  }
  // Uncoloured: a journal or a file gets no escape codes.
  auto logger = std::make_shared<spdlog::logger>("bucketd",
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_formatter(std::move(formatter));
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace bucketd::server
