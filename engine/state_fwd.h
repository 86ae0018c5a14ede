#pragma once

namespace bucketd {
struct Slot;
struct User;
}  // namespace bucketd
