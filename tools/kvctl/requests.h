// SPDX-License-Identifier: MIT
//
// kvctl's requests to kvpoold, through the control client
// (daemon/control_client.h): one connection per command (entries pages
// through a pool on one), each request bounded by --timeout, and the
// daemon's answer or the client's error turned into kvctl's exit codes.
#pragma once

#include "args.h"
#include "common.h"
#include "control_client.h"

#include <atomic>
#include <kvpool/control.h>
#include <string>

namespace kvctl {

using Response = kv::control::Reply;

// One request on a connection of its own.
Result<Response> transact(const Command &c, const kv_ctl_request &req);

// The daemon's error answer as kvctl reports it: "VERB POOL: MESSAGE".
Failure daemon_failure(const std::string &where, const Response &resp);

// entries: pages through the pool on one connection (control.h, ENTRIES:
// each request is bounded in the daemon's work and reply) and prints each
// page as it arrives, so a pool of millions of blocks lists in constant
// memory. --limit N stops after N rows (default: all). With --json, one
// document that is written as it grows:
//   {"pool": P, "entry_slots": N, "entries": [ROW, ...], "count": N, "truncated": B}
// one row per line; "truncated" is true when --limit stopped the listing
// before the end of the table. A failure after the document began closes it
// with "error": {"exit": N, "message": TEXT} in place of count and truncated.
Result<int> list_entries(const Command &c, kv_ctl_request req);

// Poll the pool's status once a second and print the running job's
// progress on stderr: one updating line on a terminal, a line every 10 s
// otherwise. Quiet for jobs that finish within the first second.
void show_progress(const Command &c, const std::atomic<bool> &finished);

} // namespace kvctl
