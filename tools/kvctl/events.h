// SPDX-License-Identifier: MIT
//
// kvctl events tail POOL [--json] [--from SEQ] [--count N] [--timeout S]:
// subscribe to a pool's vLLM-format KV events (doc/events.md) and print
// each event on a line of its own, decoded from either encoding. The
// endpoint and topic come from the pool's status ("events" section); an
// endpoint kvpoold binds on every address (tcp://*:P) is reached on
// loopback. --from SEQ first replays the batches from SEQ on the replay
// endpoint, then goes on with the live stream without repeating a batch.
// --json prints one JSON object per event:
//   {"seq": N, "ts": T, "type": "BlockStored", "block_hashes": [...], ...}
// with the event's fields by vLLM's names (a bytes hash as a hex string).
#pragma once

namespace kvctl {

// Whether the command line's verb is "events" (the first argument that is
// not an option or an option's value).
bool is_events_command(int argc, char **argv);

// Run it; the exit status (common.h's codes).
int events_main(int argc, char **argv);

} // namespace kvctl
