// SPDX-License-Identifier: MIT
#include "output.h"

#include "remote.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <kvpool/control.h>
#include <utility>

namespace kvctl {

const json *field(const json &o, const char *key) {
    if (!o.is_object()) return nullptr;
    const auto it = o.find(key);
    return it == o.end() ? nullptr : &*it;
}

std::optional<uint64_t> get_u64(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v) return std::nullopt;
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (v->is_number_integer()) {
        const int64_t i = v->get<int64_t>();
        return i >= 0 ? std::optional<uint64_t>(uint64_t(i)) : std::nullopt;
    }
    if (v->is_number_float()) {
        const double d = v->get<double>();
        if (d >= 0 && d < 18446744073709551616.0 && d == std::floor(d)) return uint64_t(d);
    }
    return std::nullopt;
}

std::optional<int64_t> get_i64(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v) return std::nullopt;
    if (v->is_number_unsigned()) {
        const uint64_t u = v->get<uint64_t>();
        return u <= uint64_t(INT64_MAX) ? std::optional<int64_t>(int64_t(u)) : std::nullopt;
    }
    if (v->is_number_integer()) return v->get<int64_t>();
    return std::nullopt;
}

std::optional<double> get_double(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v || !v->is_number()) return std::nullopt;
    const double d = v->get<double>();
    return std::isfinite(d) ? std::optional<double>(d) : std::nullopt;
}

std::optional<bool> get_bool(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v || !v->is_boolean()) return std::nullopt;
    return v->get<bool>();
}

// Text from the daemon goes to a terminal: control characters (C0, DEL and
// the UTF-8 encoded C1 range, which holds CSI) and every byte that does not
// start a well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or
// code points past U+10FFFF) become '?'.
std::string sanitize(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    auto byte = [&](size_t i) { return i < s.size() ? static_cast<unsigned char>(s[i]) : 0; };
    for (size_t i = 0; i < s.size();) {
        const unsigned char b = byte(i);
        if (b < 0x80) {
            out += b < 0x20 || b == 0x7f ? '?' : char(b);
            i++;
            continue;
        }
        // Length and the allowed range of the second byte, by the lead byte.
        size_t len = 0;
        unsigned char lo = 0x80, hi = 0xbf;
        if (b >= 0xc2 && b <= 0xdf)
            len = 2;
        else if (b == 0xe0)
            len = 3, lo = 0xa0;
        else if (b == 0xed)
            len = 3, hi = 0x9f;
        else if (b >= 0xe1 && b <= 0xef)
            len = 3;
        else if (b == 0xf0)
            len = 4, lo = 0x90;
        else if (b == 0xf4)
            len = 4, hi = 0x8f;
        else if (b >= 0xf1 && b <= 0xf3)
            len = 4;
        bool ok = len != 0 && byte(i + 1) >= lo && byte(i + 1) <= hi;
        for (size_t k = 2; ok && k < len; k++)
            ok = byte(i + k) >= 0x80 && byte(i + k) <= 0xbf;
        if (!ok) { // a stray byte: one '?', and resynchronise on the next
            out += '?';
            i++;
        } else if (b == 0xc2 && byte(i + 1) <= 0x9f) { // C1 control
            out += '?';
            i += 2;
        } else {
            out.append(s.substr(i, len));
            i += len;
        }
    }
    return out;
}

std::string text(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v || !v->is_string() || v->get_ref<const std::string &>().empty()) return kNone;
    return sanitize(v->get_ref<const std::string &>());
}

std::string count(std::optional<uint64_t> v) {
    return v ? std::to_string(*v) : kNone;
}
std::string count(const json &o, const char *key) {
    return count(get_u64(o, key));
}

std::string size(std::optional<uint64_t> v) {
    return v ? format_size(*v) : kNone;
}
std::string size(const json &o, const char *key) {
    return size(get_u64(o, key));
}

// "16.0 GiB (17179869184 bytes)"; the exact count matters next to a rounded one.
std::string size_exact(const json &o, const char *key) {
    const auto v = get_u64(o, key);
    if (!v) return kNone;
    if (*v < 1024) return format_size(*v);
    return format_size(*v) + " (" + std::to_string(*v) + " bytes)";
}

namespace {

// A value already in percent (0..100).
std::string percent(std::optional<double> v) {
    return v ? strf("%.1f%%", *v) : kNone;
}
// A fraction (0..1) shown in percent.
std::string fraction(std::optional<double> v) {
    return v ? strf("%.1f%%", *v * 100.0) : kNone;
}

std::string yes_no(std::optional<bool> v) {
    if (!v) return kNone;
    return *v ? "yes" : "no";
}

std::string duration(std::optional<double> s) {
    if (!s || *s < 0) return kNone;
    if (*s < 10) return strf("%.1fs", *s);
    if (*s < 60) return strf("%.0fs", *s);
    if (*s >= 1e12) return strf("%.3gs", *s); // keeps the conversions below in range
    const auto t = uint64_t(*s);
    if (t < 3600) return strf("%um%02us", unsigned(t / 60), unsigned(t % 60));
    if (t < 86400) return strf("%uh%02um", unsigned(t / 3600), unsigned(t / 60 % 60));
    return strf("%llud%02uh", (unsigned long long)(t / 86400), unsigned(t / 3600 % 24));
}

std::string numa(const json &o, const char *key) {
    const auto n = get_i64(o, key);
    if (!n) return kNone;
    return *n == -1 ? "none" : std::to_string(*n);
}

// "-" when nothing was looked up: a 0.0% hit rate then would read as all misses.
std::string hit_rate(const json &pool) {
    const auto hits = get_u64(pool, "hits"), misses = get_u64(pool, "misses");
    if (hits && misses && *hits == 0 && *misses == 0) return kNone;
    return fraction(get_double(pool, "hit_rate"));
}

} // namespace

// A value of a key kvctl does not know, shown as well as it can be.
std::string any_value(const json &v) {
    if (v.is_string()) return sanitize(v.get_ref<const std::string &>());
    if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
    if (v.is_null()) return kNone;
    return sanitize(v.dump(-1, ' ', false, json::error_handler_t::replace));
}

namespace {

using Lines = std::vector<std::pair<std::string, std::string>>;

// "key: value" lines with the values aligned.
void print_lines(const Lines &lines, const char *indent = "") {
    size_t w = 0;
    for (const auto &[k, v] : lines)
        w = std::max(w, k.size() + 1);
    for (const auto &[k, v] : lines)
        std::printf("%s%-*s %s\n", indent, int(w), (k + ":").c_str(), v.c_str());
}

// The keys of o that are not in known, appended as they are: a newer daemon's
// additions show up without a new kvctl.
void add_unknown(Lines &lines, const json &o, std::initializer_list<std::string_view> known) {
    if (!o.is_object()) return;
    for (const auto &[k, v] : o.items()) {
        bool seen = false;
        for (std::string_view n : known)
            seen = seen || n == k;
        if (!seen) lines.emplace_back(sanitize(k), any_value(v));
    }
}

size_t display_width(std::string_view s) {
    size_t n = 0;
    for (char ch : s)
        n += (static_cast<unsigned char>(ch) & 0xc0) != 0x80; // UTF-8 lead bytes
    return n;
}

class Table {
  public:
    struct Column {
        const char *title;
        bool right; // numbers are right-aligned
    };

    explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
    void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

    void print() const {
        std::vector<size_t> w(columns_.size());
        for (size_t i = 0; i < columns_.size(); i++)
            w[i] = display_width(columns_[i].title);
        for (const auto &row : rows_)
            for (size_t i = 0; i < row.size() && i < w.size(); i++)
                w[i] = std::max(w[i], display_width(row[i]));
        std::vector<std::string> header;
        for (const Column &col : columns_)
            header.emplace_back(col.title);
        print_row(header, w);
        for (const auto &row : rows_)
            print_row(row, w);
    }

  private:
    void print_row(const std::vector<std::string> &row, const std::vector<size_t> &w) const {
        std::string line;
        for (size_t i = 0; i < columns_.size(); i++) {
            const std::string &cell = i < row.size() ? row[i] : std::string(kNone);
            const std::string pad(w[i] - std::min(w[i], display_width(cell)), ' ');
            if (i) line += "  ";
            if (columns_[i].right)
                line += pad + cell;
            else
                line += cell + (i + 1 < columns_.size() ? pad : "");
        }
        std::printf("%s\n", line.c_str());
    }

    std::vector<Column> columns_;
    std::vector<std::vector<std::string>> rows_;
};

} // namespace

Failure malformed(const Command &c, const std::string &what) {
    // what may quote the response (the JSON parser's "last read"): sanitized.
    return Failure{kExitProtocol, "malformed " + std::string(c.verb->name()) +
                                      " response from kvpoold: " + sanitize(what)};
}

Result<const json *> array_field(const Command &c, const json &doc, const char *key) {
    const json *a = field(doc, key);
    if (!a || !a->is_array())
        return std::unexpected(malformed(c, strf("expected a \"%s\" array", key)));
    return a;
}

namespace {

Result<int> print_pools(const Command &c, const json &doc) {
    auto pools = array_field(c, doc, "pools");
    if (!pools) return std::unexpected(pools.error());
    Table t({{"NAME", false},
             {"SIZE", true},
             {"USED", true},
             {"USED%", true},
             {"ENTRIES", true},
             {"HIT RATE", true},
             {"POLICY", false},
             {"PAGE", true},
             {"NUMA", true},
             {"CLIENTS", true}});
    for (const json &p : **pools)
        t.add({text(p, "name"), size(p, "size"), size(p, "used_bytes"),
               percent(get_double(p, "used_pct")), count(p, "entries"), hit_rate(p),
               text(p, "policy"), size(p, "page_size"), numa(p, "numa_node"), count(p, "clients")});
    t.print();
    return kExitOk;
}

void print_pool(const json &p) {
    // A pool the caller may not read comes as its public view only
    // (control.h, "Authorization"): say so instead of a page of dashes.
    if (get_bool(p, "restricted").value_or(false)) {
        print_lines({{"name", text(p, "name")},
                     {"state", text(p, "state")},
                     {"group", text(p, "group")},
                     {"restricted", "its usage is shown to root, group " + text(p, "group") +
                                        " and the admin group only"}});
        return;
    }
    Lines l = {
        {"name", text(p, "name")},
        {"path", text(p, "path")},
        {"state", text(p, "state")},
        {"origin", text(p, "origin")},
        {"size", size_exact(p, "size")},
        {"capacity", size_exact(p, "capacity")},
        {"used", size(p, "used_bytes") + " (" + percent(get_double(p, "used_pct")) + ")"},
        {"free", size(p, "free_bytes")},
        {"entries", count(p, "entries") + " committed of " + count(p, "entry_slots") + " slots"},
        {"bytes committed", size_exact(p, "bytes_committed")},
        {"hit rate",
         hit_rate(p) + " (" + count(p, "hits") + " hits, " + count(p, "misses") + " misses)"},
        {"puts", count(p, "puts")},
        {"dedups", count(p, "dedups")},
        {"evictions", count(p, "evictions")},
        {"removes", count(p, "removes")},
        {"pins", count(p, "pins")},
        {"clients", count(p, "clients")},
        {"policy", text(p, "policy")},
        {"page size", size(p, "page_size")},
        {"backing", text(p, "backing")},
        {"numa node", numa(p, "numa_node")},
        {"group", text(p, "group")},
        {"mode", text(p, "mode")},
        {"watermarks", "high " + fraction(get_double(p, "high_watermark")) + ", low " +
                           fraction(get_double(p, "low_watermark"))},
    };
    if (field(p, "created")) {
        const auto ns = get_u64(p, "create_time_ns");
        const double now =
            std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        const double age = ns ? now - double(*ns) / 1e9 : -1;
        l.emplace_back("created",
                       text(p, "created") + (age >= 0 ? " (" + duration(age) + " ago)" : ""));
    }
    // Keys the contract does not list yet: shown only when sent.
    if (field(p, "background_evicted_bytes"))
        l.emplace_back("background evicted", size(p, "background_evicted_bytes"));
    if (field(p, "reaped_clients")) l.emplace_back("reaped clients", count(p, "reaped_clients"));
    if (const json *snap = field(p, "snapshot"); snap && snap->is_object()) {
        std::string when;
        if (get_bool(*snap, "persist_on_stop").value_or(false)) when += "persist on stop";
        if (get_bool(*snap, "restore_on_start").value_or(false))
            when += std::string(when.empty() ? "" : ", ") + "restore on start";
        l.emplace_back("snapshot", text(*snap, "path") + (when.empty() ? "" : " (" + when + ")"));
        if (const json *run = field(*snap, "running"); run && run->is_object())
            l.emplace_back("running", text(*run, "op") + ": " + size(*run, "done_bytes") + " of " +
                                          size(*run, "total_bytes"));
        for (const char *k : {"last_persist", "last_restore"}) {
            const json *r = field(*snap, k);
            if (!r || !r->is_object()) continue;
            const bool ok = get_bool(*r, "ok").value_or(false);
            std::string line = ok ? count(*r, "blocks") + " blocks, " + size(*r, "bytes") + " in " +
                                        duration(get_double(*r, "seconds"))
                                  : "FAILED: " + text(*r, "error");
            if (ok && get_u64(*r, "dropped").value_or(0))
                line += ", " + count(*r, "dropped") + " dropped";
            if (ok && get_bool(*r, "truncated").value_or(false))
                line += ", file truncated or damaged (its verified part was restored)";
            l.emplace_back(k[5] == 'p' ? "last persist" : "last restore", line);
        }
    }
    add_unknown(l, p,
                {"name",
                 "path",
                 "state",
                 "origin",
                 "size",
                 "capacity",
                 "used_bytes",
                 "used_pct",
                 "entries",
                 "entry_slots",
                 "bytes_committed",
                 "hits",
                 "misses",
                 "hit_rate",
                 "puts",
                 "dedups",
                 "evictions",
                 "removes",
                 "pins",
                 "clients",
                 "policy",
                 "page_size",
                 "backing",
                 "numa_node",
                 "group",
                 "mode",
                 "high_watermark",
                 "snapshot",
                 "low_watermark",
                 "background_evicted_bytes",
                 "reaped_clients",
                 "free_bytes",
                 "create_time_ns",
                 "created"});
    print_lines(l);
}

struct EntryColumn {
    size_t width;
    bool right;
};
constexpr EntryColumn kEntryColumns[] = {{4, true}, {32, false}, {10, true}, {6, true},  {8, true},
                                         {4, true}, {9, false},  {6, true},  {12, false}};

} // namespace

void EntryTable::header() const {
    row({"NS", "KEY", "LENGTH", "TOKENS", "PRIORITY", "PINS", "STATE", "AGE", "ACCESS"});
}

void EntryTable::add(const json &e) const {
    row({count(e, "ns"), text(e, "key"), size(e, "length"), count(e, "tokens"),
         count(e, "priority"), count(e, "pins"), text(e, "state"), duration(get_double(e, "age_s")),
         access(e)});
}

std::string EntryTable::access(const json &e) {
    if (const auto idle = get_double(e, "last_access_s")) return "idle " + duration(idle);
    if (const auto n = get_u64(e, "access_count")) return "lfu " + std::to_string(*n);
    if (const auto ref = get_bool(e, "referenced")) return *ref ? "referenced" : "unreferenced";
    return kNone;
}

void EntryTable::row(const std::vector<std::string> &cells) const {
    std::string line;
    for (size_t i = 0; i < std::size(kEntryColumns); i++) {
        const std::string &cell = cells[i];
        const size_t w = kEntryColumns[i].width;
        const std::string pad(w - std::min(w, display_width(cell)), ' ');
        if (i) line += "  ";
        if (kEntryColumns[i].right)
            line += pad + cell;
        else
            line += cell + (i + 1 < std::size(kEntryColumns) ? pad : "");
    }
    std::printf("%s\n", line.c_str());
}

json error_json(const Failure &f) {
    return json{{"exit", f.exit},
                {"errno", f.error ? json(f.error) : json(nullptr)},
                {"message", f.message}};
}

namespace {

Result<int> print_health(const Command &c, const json &doc) {
    const auto healthy = get_bool(doc, "healthy");
    if (!healthy) return std::unexpected(malformed(c, "expected a \"healthy\" boolean"));
    if (*healthy) {
        std::printf("healthy\n");
    } else {
        std::printf("unhealthy:\n");
        if (const json *problems = field(doc, "problems"); problems && problems->is_array())
            for (const json &p : *problems)
                std::printf("  - %s\n", any_value(p).c_str());
    }
    // The daemon's checks read the tables only (control.h, HEALTH).
    if (get_bool(doc, "data_checked") == false)
        std::printf("(block data not read: kvctl verify %s checks every block's checksum)\n",
                    text(doc, "pool").c_str());
    Lines l = {{"dead clients", count(doc, "dead_clients")}};
    static const json kEmpty = json::object();
    const json *u = field(doc, "usage");
    const json &usage = u ? *u : kEmpty;
    l.insert(l.end(), {
                          {"entries committed", count(usage, "entries_committed")},
                          {"entries reserved", count(usage, "entries_reserved")},
                          {"entries dead", count(usage, "entries_dead")},
                          {"entries free", count(usage, "entries_free")},
                          {"bytes committed", size_exact(usage, "bytes_committed")},
                          {"blocks used", count(usage, "blocks_used")},
                          {"blocks free", count(usage, "blocks_free")},
                          {"block bytes used", size_exact(usage, "block_bytes_used")},
                          {"pins", count(usage, "pins")},
                          {"journal pins", count(usage, "journal_pins")},
                          {"slabs active", count(usage, "slabs_active")},
                          {"slabs free", count(usage, "slabs_free")},
                          {"orphan blocks", count(usage, "orphan_blocks")},
                          {"bad links", count(usage, "bad_links")},
                          {"unreachable", count(usage, "unreachable")},
                      });
    add_unknown(l, usage,
                {"entries_committed", "entries_reserved", "entries_dead", "entries_free",
                 "bytes_committed", "blocks_used", "blocks_free", "block_bytes_used", "pins",
                 "journal_pins", "slabs_active", "slabs_free", "orphan_blocks", "bad_links",
                 "unreachable"});
    std::printf("\n");
    print_lines(l);
    return *healthy ? kExitOk : kExitFailed;
}

// persist and restore: what was written or read, in words. Every key of
// the daemon's document (snapshot_jobs.cc, result_json) has a line or is
// folded into one; only keys kvctl does not know are shown as they are.
void print_snapshot(const Command &c, const json &doc) {
    const bool restore = c.verb->op == KV_CTL_OP_RESTORE;
    std::printf("%s pool %s %s %s\n", restore ? "restored" : "persisted", text(doc, "pool").c_str(),
                restore ? "from" : "to", text(doc, "path").c_str());
    const auto seconds = get_double(doc, "seconds");
    auto rate = get_double(doc, "gib_per_s");
    if (!rate) { // a daemon that does not send it: the data bytes over the time
        const auto bytes = get_u64(doc, "bytes");
        if (bytes && seconds && *seconds > 0) rate = double(*bytes) / *seconds / double(1ULL << 30);
    }
    Lines l = {{"blocks", count(doc, "blocks")}, {"data", size_exact(doc, "bytes")}};
    if (const auto f = get_u64(doc, "file_bytes"); f && *f)
        l.emplace_back("file", size_exact(doc, "file_bytes"));
    l.emplace_back("time", seconds ? strf("%.3f s", *seconds) : kNone);
    l.emplace_back("rate", rate && *rate > 0 ? strf("%.2f GiB/s", *rate) : kNone);
    if (restore) {
        const auto dropped = get_u64(doc, "dropped");
        std::string why;
        if (dropped && *dropped && field(doc, "dropped_corrupt")) {
            const uint64_t corrupt = get_u64(doc, "dropped_corrupt").value_or(0);
            const uint64_t no_room = get_u64(doc, "dropped_no_room").value_or(0);
            if (corrupt + no_room <= *dropped)
                why = " (" + std::to_string(corrupt) + " failed verification, " +
                      std::to_string(no_room) + " found no room in the pool, " +
                      std::to_string(*dropped - corrupt - no_room) + " refused by the pool)";
        }
        l.emplace_back("dropped", count(dropped) + " blocks" + why);
        l.emplace_back("evicted", count(doc, "evicted") +
                                      " blocks of the pool, to make room for the snapshot's");
        if (get_u64(doc, "skipped").value_or(0))
            l.emplace_back("skipped", count(doc, "skipped") + " blocks already in the pool");
        if (get_u64(doc, "damaged_segments").value_or(0))
            l.emplace_back("damaged", count(doc, "damaged_segments") +
                                          " segment(s) of the file lost to a damaged head");
        if (get_u64(doc, "expired").value_or(0))
            l.emplace_back("expired", count(doc, "expired") +
                                          " blocks whose time to live ran out since the persist");
        if (get_bool(doc, "truncated").value_or(false))
            l.emplace_back("file state",
                           "truncated or damaged: only its verified part was restored");
        if (get_bool(doc, "trailer_damaged").value_or(false))
            l.emplace_back("trailer", "damaged (" + text(doc, "trailer_problem") +
                                          "); every block before it was read and verified");
        if (get_u64(doc, "trailing_bytes").value_or(0))
            l.emplace_back("trailing",
                           size_exact(doc, "trailing_bytes") + " after the trailer, ignored");
    } else if (get_bool(doc, "recycled_spare").value_or(false)) {
        l.emplace_back("spare", "written over the previous snapshot's blocks (the .spare file)");
    }
    if (field(doc, "key_id"))
        l.emplace_back("encryption", text(doc, "key_id").empty()
                                         ? "none (the pool has no [pool.encryption])"
                                         : "AES-256-GCM, pool key " + text(doc, "key_id"));
    if (const auto fixed = get_bool(doc, "fixed_buffers"))
        l.emplace_back("buffers", *fixed ? "registered with io_uring (fixed buffers)"
                                         : "not registered (plain io_uring I/O)");
    if (field(doc, "quarantined"))
        l.emplace_back("quarantined", text(doc, "quarantined") +
                                          " (the file, moved aside: no persist writes over it)");
    add_unknown(l, doc,
                {"pool",
                 "op",
                 "path",
                 "blocks",
                 "bytes",
                 "file_bytes",
                 "seconds",
                 "gib_per_s",
                 "dropped",
                 "dropped_corrupt",
                 "dropped_no_room",
                 "evicted",
                 "skipped",
                 "truncated",
                 "damaged_segments",
                 "key_id",
                 "fixed_buffers",
                 "recycled_spare",
                 "quarantined",
                 "expired",
                 "trailer_damaged",
                 "trailer_problem",
                 "trailing_bytes"});
    print_lines(l, "  ");
}

// verify: the totals, then the blocks that failed their checksum.
Result<int> print_verify(const Command &c, const json &doc) {
    const auto bad = get_u64(doc, "bad_count");
    if (!bad) return std::unexpected(malformed(c, "expected a \"bad_count\" number"));
    const auto seconds = get_double(doc, "seconds");
    std::printf("pool %s: %s blocks (%s) checked in %s: %s\n", text(doc, "pool").c_str(),
                count(doc, "checked").c_str(), size(doc, "checked_bytes").c_str(),
                seconds ? strf("%.3f s", *seconds).c_str() : kNone,
                *bad ? strf("%llu failed the checksum", (unsigned long long)*bad).c_str()
                     : "every checksum matches");
    if (*bad) {
        auto rows = array_field(c, doc, "bad");
        if (!rows) return std::unexpected(rows.error());
        Table t({{"NS", true},
                 {"KEY", false},
                 {"LENGTH", true},
                 {"ENTRY", true},
                 {"CHECKSUM", false},
                 {"REMOVED", false}});
        for (const json &b : **rows)
            t.add({count(b, "ns"), text(b, "key"), size(b, "length"), count(b, "index"),
                   text(b, "checksum"), yes_no(get_bool(b, "removed"))});
        t.print();
        if ((*rows)->size() < *bad)
            std::printf("(the first %zu of %llu are listed)\n", (*rows)->size(),
                        (unsigned long long)*bad);
        if (c.option("--remove"))
            std::printf("removed %s bad blocks\n", count(doc, "removed").c_str());
    }
    if (get_u64(doc, "skipped").value_or(0))
        std::printf("%s blocks were removed or replaced while the verify ran, and not checked\n",
                    count(doc, "skipped").c_str());
    return *bad ? kExitFailed : kExitOk;
}

Result<int> print_clients(const Command &c, const json &doc) {
    auto clients = array_field(c, doc, "clients");
    if (!clients) return std::unexpected(clients.error());
    Table t({{"SLOT", true},
             {"PID", true},
             {"ALIVE", false},
             {"COMM", false},
             {"PINS", true},
             {"RESERVATIONS", true},
             {"BYTES RESERVED", true},
             {"ATTACHED FOR", true}});
    for (const json &cl : **clients)
        t.add({count(cl, "slot"), count(cl, "pid"), yes_no(get_bool(cl, "alive")), text(cl, "comm"),
               count(cl, "pins"), count(cl, "reservations"), size(cl, "bytes_reserved"),
               duration(get_double(cl, "attached_s"))});
    t.print();
    return kExitOk;
}

Result<int> print_stats(const Command &c, const json &doc) {
    static const json kEmpty = json::object();
    const json *d = field(doc, "daemon");
    const json &daemon = d ? *d : kEmpty;
    Lines l = {
        {"version", text(daemon, "version")},
        {"pid", count(daemon, "pid")},
        {"uptime", duration(get_double(daemon, "uptime_s"))},
        {"rss", size(daemon, "rss_bytes")},
        {"requests", count(daemon, "requests")},
        {"request errors", count(daemon, "request_errors")},
        {"reaped clients", count(daemon, "reaped_clients")},
        {"background evicted", size(daemon, "background_evicted_bytes")},
    };
    add_unknown(l, daemon,
                {"version", "pid", "uptime_s", "rss_bytes", "requests", "request_errors",
                 "reaped_clients", "background_evicted_bytes"});
    std::printf("kvpoold:\n");
    print_lines(l, "  ");
    std::printf("\n");

    auto pools = array_field(c, doc, "pools");
    if (!pools) return std::unexpected(pools.error());
    Table t({{"NAME", false},
             {"ENTRIES", true},
             {"USED", true},
             {"HITS", true},
             {"MISSES", true},
             {"HIT RATE", true},
             {"PUTS", true},
             {"DEDUPS", true},
             {"EVICTIONS", true},
             {"REMOVES", true},
             {"PINS", true},
             {"CLIENTS", true}});
    for (const json &p : **pools)
        t.add({text(p, "name"), count(p, "entries"), size(p, "used_bytes"), count(p, "hits"),
               count(p, "misses"), hit_rate(p), count(p, "puts"), count(p, "dedups"),
               count(p, "evictions"), count(p, "removes"), count(p, "pins"), count(p, "clients")});
    t.print();
    return kExitOk;
}

} // namespace

Result<int> render(const Command &c, const json &doc) {
    if (!doc.is_object())
        return std::unexpected(
            malformed(c, std::string("expected a JSON object, got ") + doc.type_name()));
    const std::string pool = text(doc, "pool");
    switch (c.verb->op) {
    case KV_CTL_OP_LIST:
        return print_pools(c, doc);
    case KV_CTL_OP_STATUS:
        if (c.positional.empty()) return print_pools(c, doc);
        print_pool(doc);
        return kExitOk;
    case KV_CTL_OP_CREATE:
        std::printf("created pool %s\n\n", text(doc, "name").c_str());
        print_pool(doc);
        return kExitOk;
    case KV_CTL_OP_DESTROY:
        if (get_bool(doc, "destroyed") != true) {
            std::fprintf(stderr,
                         "kvctl: destroy %s: kvpoold answered without \"destroyed\": true\n",
                         pool.c_str());
            return kExitFailed;
        }
        std::printf("destroyed pool %s\n", pool.c_str());
        return kExitOk;
    case KV_CTL_OP_ENTRIES: // list_entries prints as pages arrive
        return kExitOk;
    case KV_CTL_OP_HEALTH:
        return print_health(c, doc);
    case KV_CTL_OP_VERIFY:
        return print_verify(c, doc);
    case KV_CTL_OP_EVICT:
        std::printf("pool %s: freed %s of %s requested\n", pool.c_str(),
                    size(doc, "freed_bytes").c_str(), size(doc, "requested_bytes").c_str());
        return kExitOk;
    case KV_CTL_OP_PERSIST:
    case KV_CTL_OP_RESTORE:
        print_snapshot(c, doc);
        return kExitOk;
    case KV_CTL_OP_CLIENTS:
        return print_clients(c, doc);
    case KV_CTL_OP_DETACH:
        std::printf("pool %s: detached pid %s (killed: %s, clients reaped: %s)\n", pool.c_str(),
                    count(doc, "pid").c_str(), yes_no(get_bool(doc, "killed")).c_str(),
                    count(doc, "reaped").c_str());
        return kExitOk;
    case KV_CTL_OP_STATS:
        return print_stats(c, doc);
    case KV_CTL_OP_REMOTE_STATUS:
        return print_remote(c, doc);
    case KV_CTL_OP_VERSION:
        std::printf("kvpoold %s (protocol %s, pid %s)\n", text(doc, "daemon").c_str(),
                    count(doc, "protocol").c_str(), count(doc, "pid").c_str());
        return kExitOk;
    }
    return kExitOk;
}

int partial_restore(const Command &c, const json &doc) {
    if (c.verb->op != KV_CTL_OP_RESTORE) return kExitOk;
    const bool truncated = get_bool(doc, "truncated").value_or(false);
    const uint64_t dropped = get_u64(doc, "dropped").value_or(0);
    if (!truncated && dropped == 0) return kExitOk;
    std::string why;
    if (truncated)
        why = "the snapshot is truncated or damaged: only its verified part was restored";
    if (dropped) {
        const uint64_t corrupt = get_u64(doc, "dropped_corrupt").value_or(0);
        const uint64_t no_room = get_u64(doc, "dropped_no_room").value_or(0);
        why += std::string(why.empty() ? "" : "; ") + std::to_string(dropped) + " block(s) dropped";
        if (field(doc, "dropped_corrupt") && corrupt + no_room <= dropped)
            why += " (" + std::to_string(corrupt) + " failed verification, " +
                   std::to_string(no_room) + " found no room in the pool, " +
                   std::to_string(dropped - corrupt - no_room) + " refused by the pool)";
        else
            why += " (failed verification or no room in the pool)";
    }
    std::fflush(stdout);
    std::fprintf(stderr, "kvctl: restore %s: %s blocks restored; %s\n",
                 c.positional.empty() ? "" : c.positional[0].c_str(), count(doc, "blocks").c_str(),
                 why.c_str());
    return kExitPartial;
}

int report(const Failure &f, bool as_json) {
    if (as_json)
        std::printf("%s\n", json{{"error", error_json(f)}}
                                .dump(2, ' ', false, json::error_handler_t::replace)
                                .c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "kvctl: %s\n", f.text().c_str());
    return f.exit;
}

} // namespace kvctl
