// SPDX-License-Identifier: MIT
//
// kvctl remote status [POOL]: the remote tier of one pool or of every pool
// that has one (control.h, REMOTE_STATUS), as "key: value" lines.
#pragma once

#include "args.h"
#include "common.h"

namespace kvctl {

Result<int> print_remote(const Command &c, const json &doc);

} // namespace kvctl
