// SPDX-License-Identifier: MIT
// Compiled by the test noexcept.rejected with -fno-exceptions: effattn must
// stop at once with its own message (core/config.hpp), not with a compiler
// error about `try` deep inside a header.
#include <effattn/effattn.hpp>

int main() { return 0; }
