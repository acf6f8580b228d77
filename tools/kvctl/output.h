// SPDX-License-Identifier: MIT
//
// kvctl's output: the daemon's JSON read through accessors that never throw
// (a missing or mistyped key shows as "-", so an older or newer daemon
// cannot crash kvctl), rendered as tables and "key: value" lines, or printed
// as the document itself with --json. Text from the daemon is sanitized
// before it reaches a terminal.
#pragma once

#include "args.h"
#include "common.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvctl {

// ---- Reading the daemon's JSON: nothing here throws ---------------------------

const json *field(const json &o, const char *key);
std::optional<uint64_t> get_u64(const json &o, const char *key);
std::optional<int64_t> get_i64(const json &o, const char *key);
std::optional<double> get_double(const json &o, const char *key);
std::optional<bool> get_bool(const json &o, const char *key);

// Control characters and malformed UTF-8 become '?'.
std::string sanitize(std::string_view s);
// A string field, sanitized; "-" when missing, mistyped or empty.
std::string text(const json &o, const char *key);
std::string count(std::optional<uint64_t> v);
std::string count(const json &o, const char *key);
// Binary units ("16.0 GiB").
std::string size(std::optional<uint64_t> v);
std::string size(const json &o, const char *key);
// A value of a key kvctl does not know, shown as well as it can be.
std::string any_value(const json &v);

// ---- Output --------------------------------------------------------------------

// A response whose shape is wrong where kvctl cannot print "-" instead.
Failure malformed(const Command &c, const std::string &what);
// doc[key], which must be an array.
Result<const json *> array_field(const Command &c, const json &doc, const char *key);

// The rows of entries, printed as pages arrive: fixed column widths (the
// widest usual value of each), so rows of later pages line up with the
// header; a wider cell only shifts the rest of its row.
class EntryTable {
  public:
    void header() const;
    void add(const json &e) const;

  private:
    // What the pool's policy records of the block's use (control.h, ENTRY).
    static std::string access(const json &e);
    void row(const std::vector<std::string> &cells) const;
};

// How an error is shown once the --json document has begun on stdout.
json error_json(const Failure &f);

// Print a successful answer as tables and lines; the exit code (health,
// verify: 1 when a problem was found).
Result<int> render(const Command &c, const json &doc);

// A restore that kept only part of its snapshot (a truncated or damaged
// file, blocks that failed verification or found no room) succeeded at what
// it could do, but a script must be able to tell it from a whole restore:
// exit 8, and say why on stderr (after the summary, which says how many
// blocks were restored).
int partial_restore(const Command &c, const json &doc);

// A failure as the user asked for it: "kvctl: MESSAGE" on stderr always,
// and with --json also {"error": {"exit", "errno", "message"}} on stdout,
// where the document a success prints would have gone.
int report(const Failure &f, bool as_json);

} // namespace kvctl
