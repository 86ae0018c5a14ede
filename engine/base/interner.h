#pragma once
// Interns strings (event names, property keys) to dense ids, so hot structures hold 4-byte
// ids instead of strings. Ids are assigned in order of first use, hence deterministic
// under replay.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_map.h>

namespace bucketd {

class Interner {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  uint32_t Intern(std::string_view text) {
    auto it = ids_.find(Key(text));
    if (it != ids_.end()) return it->second;
    const auto id = static_cast<uint32_t>(names_.size());
    names_.emplace_back(text);
    ids_.emplace(std::string(text), id);
    return id;
  }
  // kNone when the string was never interned.
  uint32_t Find(std::string_view text) const {
    auto it = ids_.find(Key(text));
    return it == ids_.end() ? kNone : it->second;
  }
  const std::string& Name(uint32_t id) const { return names_[id]; }
  size_t size() const { return names_.size(); }

 private:
  // Debian's Abseil has its own string_view type; heterogeneous lookup needs that one.
  static absl::string_view Key(std::string_view s) { return {s.data(), s.size()}; }

  std::vector<std::string> names_;
  absl::flat_hash_map<std::string, uint32_t> ids_;
};

}  // namespace bucketd
