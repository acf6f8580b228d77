// SPDX-License-Identifier: MIT
//
// kvpoold's TOML config. toml++ builds the tree; everything here is the
// checking. Each table's keys are first compared with the known ones, so a
// typo reports "unknown key" instead of a confusing "missing key" further on.
#include "config.h"

#include "crypto.h"
#include "secret_file.h"
#include "units.h"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <kvpool/region.h>
#include <netinet/in.h>
#include <span>
#include <sys/stat.h>
#include <sys/un.h>
#include <toml++/toml.h>
#include <unistd.h>
#include <vector>

namespace kv::daemon {
namespace {

using kv::detail::format_size;
using kv::detail::quoted;

constexpr uint64_t kMaxConfigBytes = 1 << 20;
// Linux MAX_NUMNODES is at most 1 << CONFIG_NODES_SHIFT = 1024.
constexpr int64_t kMaxNumaNode = 1023;
// libkv's limits (layout.cc), checked here too so the file and key are named.
constexpr uint64_t kMinSlab = 64ULL << 10;
constexpr uint64_t kMaxSlab = 1ULL << 30;
constexpr uint64_t kDefaultSlab = 4ULL << 20;
constexpr uint64_t kMinAvgBlock = 4096;
// sockaddr_un::sun_path holds the path and its terminating NUL.
constexpr size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;

constexpr std::string_view kTopKeys[] = {"daemon", "pool"};
constexpr std::string_view kDaemonKeys[] = {
    "control_socket",   "shm_dir",           "hugepage_dir", "state_dir", "admin_group", "metrics",
    "reap_interval_ms", "evict_interval_ms", "log_level",    "audit",     "audit_rate"};
// Packed by hand: clang-format would put one key per line.
// clang-format off
constexpr std::string_view kPoolKeys[] = {
    "name", "size", "hugepages", "numa_node", "eviction", "group", "mode", "prefault",
    "high_watermark", "low_watermark", "slab_size", "avg_block_size", "max_clients", "max_entries",
    "snapshot_dir", "persist_on_stop", "restore_on_start", "feed_slots", "remote", "events",
    "encryption", "secure_erase"};
constexpr std::string_view kRemoteKeys[] = {
    "seeds", "key_prefix", "write", "namespaces", "bandwidth", "ttl_s", "username",
    "password_file", "password_credential", "max_connections", "timeout_ms", "queue_bytes",
    "medium"};
// clang-format on
constexpr std::string_view kEncryptionKeys[] = {"key", "keys"};
constexpr std::string_view kKeyKeys[] = {"id", "file", "credential"};
constexpr std::string_view kEventsKeys[] = {"endpoint", "replay_endpoint", "topic",
                                            "encoding", "hash_form",       "buffer_steps",
                                            "hwm",      "max_batch",       "medium"};
// The names of KV_EVICT_* (kv_evict_policy_name).
constexpr std::array<std::string_view, 6> kEvictionPolicies{"clock", "lru",      "lfu",
                                                            "fifo",  "priority", "prefix"};

std::string join(std::span<const std::string_view> words) {
    std::string out;
    for (std::string_view w : words) {
        if (!out.empty()) out += ", ";
        out += w;
    }
    return out;
}

// %g, but a whole number keeps a ".0" so "got float 1.0" reads as a float.
std::string fmt_double(double d) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", d);
    std::string s = buf;
    if (s.find_first_of(".eni") == std::string::npos) s += ".0";
    return s;
}

// Edit distance, for "did you mean" on unknown keys; keys are short.
size_t distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); j++)
        row[j] = j;
    for (size_t i = 1; i <= a.size(); i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); j++) {
            const size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
            diag = up;
        }
    }
    return row[b.size()];
}

// What a node holds, as a message shows it: `string "yes"`, `integer 660`.
std::string describe_node(const toml::node &n) {
    switch (n.type()) {
    case toml::node_type::string:
        return "string " + quoted(n.as_string()->get());
    case toml::node_type::integer:
        return "integer " + std::to_string(n.as_integer()->get());
    case toml::node_type::floating_point:
        return "float " + fmt_double(n.as_floating_point()->get());
    case toml::node_type::boolean:
        return n.as_boolean()->get() ? "boolean true" : "boolean false";
    case toml::node_type::table:
        return "a table";
    case toml::node_type::array:
        return "an array";
    case toml::node_type::date:
        return "a date";
    case toml::node_type::time:
        return "a time";
    case toml::node_type::date_time:
        return "a date-time";
    case toml::node_type::none:
        break;
    }
    return "nothing";
}

bool valid_pool_name(std::string_view s) {
    if (s.empty() || s.size() > 63 || s == "." || s == "..") return false;
    for (char c : s) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok) return false;
    }
    return true;
}

// POSIX portable names plus the trailing '$' Samba machine accounts use,
// with a leading digit allowed for the distributions that allow it. The
// group is resolved later, when the daemon applies the config.
bool valid_group_name(std::string_view s) {
    if (!s.empty() && s.back() == '$') s.remove_suffix(1);
    if (s.empty() || s.size() > 31 || s[0] == '-') return false;
    for (char c : s) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok) return false;
    }
    return true;
}

// One key's value and the name messages use for it ("pool[1].size").
struct Field {
    const toml::node *node; // nullptr when absent
    std::string path;
};

class Reader {
  public:
    explicit Reader(std::string_view origin) : origin_(origin) {}

    const std::string &error() const { return error_; }

    // Records the first error; always returns false so callers can
    // `return fail(...)`.
    bool fail(const toml::source_region &where, std::string_view path, std::string_view msg) {
        if (!error_.empty()) return false;
        error_ = location(where);
        if (!path.empty()) {
            error_ += path;
            error_ += ": ";
        }
        error_ += msg;
        return false;
    }

    bool fail_type(const Field &f, std::string_view expected) {
        return fail(f.node->source(), f.path,
                    "expected " + std::string(expected) + ", got " + describe_node(*f.node));
    }

    bool check_keys(const toml::table &t, std::span<const std::string_view> known,
                    std::string_view where) {
        for (auto &&[k, v] : t) {
            const std::string_view name = k.str();
            bool found = false;
            std::string_view closest;
            // Suggest only near misses: 1 edit, or 2 for keys of 6 or more
            // characters ("foo" is not a typo of "pool").
            size_t best = std::clamp<size_t>(name.size() / 3, 1, 2) + 1;
            for (std::string_view kk : known) {
                if (kk == name) found = true;
                if (const size_t d = distance(name, kk); d < best) {
                    best = d;
                    closest = kk;
                }
            }
            if (found) continue;
            std::string msg = "unknown key " + quoted(name) + " " + std::string(where);
            if (!closest.empty()) msg += " (did you mean " + quoted(closest) + "?)";
            msg += "; known keys: " + join(known);
            return fail(k.source(), "", msg);
        }
        return true;
    }

    // The readers below leave *out alone when the key is absent.

    bool string(const Field &f, std::string *out) {
        if (!f.node) return true;
        const auto *s = f.node->as_string();
        if (!s) return fail_type(f, "a string");
        *out = s->get();
        return true;
    }

    bool boolean(const Field &f, bool *out) {
        if (!f.node) return true;
        const auto *b = f.node->as_boolean();
        if (!b) return fail_type(f, "a boolean");
        *out = b->get();
        return true;
    }

    bool integer(const Field &f, int64_t lo, int64_t hi, int64_t *out) {
        if (!f.node) return true;
        const auto *i = f.node->as_integer();
        const std::string range =
            "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
        if (!i || i->get() < lo || i->get() > hi) return fail_type(f, range);
        *out = i->get();
        return true;
    }

    bool u32(const Field &f, uint32_t lo, uint32_t hi, uint32_t *out) {
        int64_t v = *out;
        if (!integer(f, lo, hi, &v)) return false;
        *out = static_cast<uint32_t>(v);
        return true;
    }

    // Paths are used as given by a daemon whose working directory is "/",
    // so a relative one would silently mean something else: require "/".
    bool path(const Field &f, std::string *out, size_t max_len = 4095) {
        if (!f.node) return true;
        const auto *s = f.node->as_string();
        if (!s) return fail_type(f, "an absolute path (a string starting with /)");
        const std::string &p = s->get();
        if (p.empty() || p[0] != '/' || p.find('\0') != std::string::npos)
            return fail_type(f, "an absolute path (a string starting with /)");
        if (p.size() > max_len)
            return fail(f.node->source(), f.path,
                        "path of " + std::to_string(p.size()) +
                            " bytes is too long; expected at most " + std::to_string(max_len));
        *out = p;
        return true;
    }

    // A byte count: "512M" (see kv::detail::parse_size) or an integer.
    bool size(const Field &f, uint64_t *out) {
        if (!f.node) return true;
        if (const auto *i = f.node->as_integer()) {
            if (i->get() < 0)
                return fail_type(f, "a size such as \"512M\" or a non-negative byte count");
            *out = static_cast<uint64_t>(i->get());
            return true;
        }
        const auto *s = f.node->as_string();
        if (!s) return fail_type(f, "a size such as \"512M\" or an integer byte count");
        auto v = kv::detail::parse_size(s->get());
        if (!v) return fail(f.node->source(), f.path, v.error());
        *out = *v;
        return true;
    }

    // A fraction of capacity, 0 < x <= 1; TOML writes 1 as an integer.
    bool fraction(const Field &f, double *out) {
        if (!f.node) return true;
        double v;
        if (const auto *d = f.node->as_floating_point())
            v = d->get();
        else if (const auto *i = f.node->as_integer())
            v = double(i->get());
        else
            return fail_type(f, "a fraction of capacity (0 < x <= 1)");
        if (!(v > 0.0 && v <= 1.0)) return fail_type(f, "a fraction of capacity (0 < x <= 1)");
        *out = v;
        return true;
    }

    // One of a few words; *index is the position of the word in choices.
    bool choice(const Field &f, std::span<const std::string_view> choices, size_t *index) {
        if (!f.node) return true;
        const std::string expected = "one of: " + join(choices);
        const auto *s = f.node->as_string();
        if (!s) return fail_type(f, expected);
        for (size_t i = 0; i < choices.size(); i++) {
            if (s->get() == choices[i]) {
                *index = i;
                return true;
            }
        }
        return fail_type(f, expected);
    }

    bool mode(const Field &f, uint32_t *out) {
        if (!f.node) return true;
        // 0o660 is unambiguous in TOML; a plain 660 is decimal (= 01224), the
        // classic mistake, so only the octal form of an integer is taken.
        if (const auto *i = f.node->as_integer()) {
            if (!(i->flags() & toml::value_flags::format_as_octal)) {
                const std::string digits = std::to_string(i->get());
                return fail(f.node->source(), f.path,
                            "expected an octal mode as a string such as \"0660\", got integer " +
                                digits + ", which TOML reads as decimal; quote it: mode = \"" +
                                digits + "\"");
            }
            if (i->get() < 0 || i->get() > 0777) return fail_type(f, "a mode from 0 to 0777");
            *out = static_cast<uint32_t>(i->get());
            return true;
        }
        const auto *s = f.node->as_string();
        if (!s) return fail_type(f, "an octal mode as a string such as \"0660\"");
        auto m = kv::detail::parse_mode(s->get());
        if (!m) return fail(f.node->source(), f.path, m.error());
        if (*m > 0777)
            return fail(f.node->source(), f.path,
                        "mode " + quoted(s->get()) +
                            ": setuid, setgid and sticky bits have no meaning on a pool file; "
                            "expected at most 0777");
        *out = *m;
        return true;
    }

    bool group(const Field &f, std::string *out, bool allow_empty) {
        if (!f.node) return true;
        const auto *s = f.node->as_string();
        const char *expected = "a group name (letters, digits, '_', '.', '-'; up to 31)";
        if (!s) return fail_type(f, expected);
        if (s->get().empty() && allow_empty) {
            out->clear();
            return true;
        }
        if (!valid_group_name(s->get())) return fail_type(f, expected);
        *out = s->get();
        return true;
    }

  private:
    std::string location(const toml::source_region &r) const {
        std::string s(origin_);
        if (r.begin.line > 0) {
            s += ":" + std::to_string(r.begin.line);
            if (r.begin.column > 0) s += ":" + std::to_string(r.begin.column);
        }
        return s + ": ";
    }

    std::string_view origin_;
    std::string error_;
};

Field field(const toml::table &t, std::string_view prefix, std::string_view key) {
    std::string path(prefix);
    path += '.';
    path += key;
    return Field{t.get(key), std::move(path)};
}

bool read_daemon(Reader &r, const toml::table &t, DaemonConfig &cfg) {
    if (!r.check_keys(t, kDaemonKeys, "in [daemon]")) return false;
    const std::string_view p = "daemon";
    if (!r.path(field(t, p, "control_socket"), &cfg.control_socket, kMaxSocketPath) ||
        !r.path(field(t, p, "shm_dir"), &cfg.shm_dir) ||
        !r.path(field(t, p, "hugepage_dir"), &cfg.hugepage_dir) ||
        !r.path(field(t, p, "state_dir"), &cfg.state_dir) ||
        !r.group(field(t, p, "admin_group"), &cfg.admin_group, false) ||
        !r.u32(field(t, p, "reap_interval_ms"), 10, 1000, &cfg.reap_interval_ms) ||
        !r.u32(field(t, p, "evict_interval_ms"), 10, 10000, &cfg.evict_interval_ms) ||
        !r.boolean(field(t, p, "audit"), &cfg.audit) ||
        !r.u32(field(t, p, "audit_rate"), 1, 100000, &cfg.audit_rate))
        return false;

    const Field metrics = field(t, p, "metrics");
    if (!r.string(metrics, &cfg.metrics)) return false;
    if (metrics.node) {
        if (auto m = parse_metrics(cfg.metrics); !m)
            return r.fail(metrics.node->source(), metrics.path, m.error());
    }

    static constexpr std::array<std::string_view, 5> kLevels{"error", "warning", "notice", "info",
                                                             "debug"};
    static constexpr std::array<LogLevel, 5> kLevelValues{
        LogLevel::Error, LogLevel::Warning, LogLevel::Notice, LogLevel::Info, LogLevel::Debug};
    size_t level = SIZE_MAX;
    if (!r.choice(field(t, p, "log_level"), kLevels, &level)) return false;
    if (level != SIZE_MAX) cfg.log_level = kLevelValues[level];
    return true;
}

// ---- [pool.remote] ---------------------------------------------------------

// "host:port" or "[v6]:port"; the host is a name or an address, resolved
// when the tier connects.
bool valid_seed(std::string_view s) {
    std::string_view host, port;
    if (s.starts_with("[")) {
        const size_t close = s.find(']');
        if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
            return false;
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        const size_t colon = s.rfind(':');
        if (colon == std::string_view::npos) return false;
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) return false;
    }
    if (host.empty() || host.size() > 253 || port.empty() || port.size() > 5) return false;
    for (char c : host)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '_'))
            return false;
    uint32_t n = 0;
    for (char c : port) {
        if (c < '0' || c > '9') return false;
        n = n * 10 + uint32_t(c - '0');
    }
    return n >= 1 && n <= 65535;
}

// Printable ASCII without space: a Redis key prefix and names in messages.
bool printable_word(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

bool read_remote(Reader &r, const toml::node &n, const std::string &p, RemoteConfig &rc) {
    const auto *t = n.as_table();
    if (!t) return r.fail_type(Field{&n, p}, "a table ([pool.remote])");
    if (!r.check_keys(*t, kRemoteKeys, "in " + p)) return false;
    rc.enabled = true;

    const Field seeds = field(*t, p, "seeds");
    if (!seeds.node)
        return r.fail(t->source(), p,
                      "missing required key \"seeds\" (e.g. seeds = [\"10.0.0.1:7000\"])");
    const auto *arr = seeds.node->as_array();
    const char *seed_form = "an array of \"host:port\" strings (\"[v6]:port\" for IPv6)";
    if (!arr || arr->empty()) return r.fail_type(seeds, seed_form);
    for (size_t i = 0; i < arr->size(); i++) {
        const Field f{arr->get(i), seeds.path + "[" + std::to_string(i) + "]"};
        const auto *s = f.node->as_string();
        if (!s || !valid_seed(s->get())) return r.fail_type(f, "\"host:port\" (\"[v6]:port\")");
        rc.seeds.push_back(s->get());
    }

    const Field prefix = field(*t, p, "key_prefix");
    if (!r.string(prefix, &rc.key_prefix)) return false;
    if (prefix.node && (rc.key_prefix.size() > 64 || !printable_word(rc.key_prefix)))
        return r.fail_type(prefix, "up to 64 printable ASCII characters without spaces");
    // A hash tag in the prefix would put every block in one slot, on one master.
    if (rc.key_prefix.find_first_of("{}") != std::string::npos)
        return r.fail(prefix.node->source(), prefix.path,
                      quoted(rc.key_prefix) +
                          ": '{' and '}' make a Redis Cluster hash tag, which would put every "
                          "block on one master; expected a prefix without them");

    static constexpr std::array<std::string_view, 2> kWrite{"none", "write-behind"};
    size_t write = SIZE_MAX;
    if (!r.choice(field(*t, p, "write"), kWrite, &write)) return false;
    if (write != SIZE_MAX) rc.write = write == 0 ? WritePolicy::None : WritePolicy::WriteBehind;

    const Field nss = field(*t, p, "namespaces");
    if (nss.node) {
        const auto *a = nss.node->as_array();
        if (!a) return r.fail_type(nss, "an array of model names");
        for (size_t i = 0; i < a->size(); i++) {
            const Field f{a->get(i), nss.path + "[" + std::to_string(i) + "]"};
            const auto *s = f.node->as_string();
            if (!s || s->get().empty() || s->get().size() > 63)
                return r.fail_type(f, "a model name of 1 to 63 bytes");
            rc.namespaces.push_back(s->get());
        }
    }

    const Field bw = field(*t, p, "bandwidth");
    if (!r.size(bw, &rc.bandwidth)) return false;
    if (bw.node && rc.bandwidth != 0 && rc.bandwidth < (64ULL << 10))
        return r.fail(bw.node->source(), bw.path,
                      format_size(rc.bandwidth) +
                          " per second: expected 0 (no cap) or at least 64K per second");

    const Field qb = field(*t, p, "queue_bytes");
    if (!r.size(qb, &rc.queue_bytes)) return false;
    if (qb.node && (rc.queue_bytes < (1ULL << 20) || rc.queue_bytes > (64ULL << 30)))
        return r.fail(qb.node->source(), qb.path,
                      format_size(rc.queue_bytes) + ": expected 1M to 64G");

    if (!r.u32(field(*t, p, "ttl_s"), 0, 10U * 366 * 86400, &rc.ttl_s) ||
        !r.u32(field(*t, p, "max_connections"), 1, 64, &rc.max_connections) ||
        !r.u32(field(*t, p, "timeout_ms"), 10, 60000, &rc.timeout_ms) ||
        !r.string(field(*t, p, "username"), &rc.username) ||
        !r.path(field(*t, p, "password_file"), &rc.password_file))
        return false;

    const Field cred = field(*t, p, "password_credential");
    if (!r.string(cred, &rc.password_credential)) return false;
    if (cred.node) {
        const std::string &c = rc.password_credential;
        if (c.empty() || c.size() > 255 || !printable_word(c) || c.find('/') != std::string::npos)
            return r.fail_type(cred, "a systemd credential name (printable, no '/')");
        if (!rc.password_file.empty())
            return r.fail(cred.node->source(), cred.path,
                          "both password_file and password_credential are set; expected one");
    }
    const Field user = field(*t, p, "username");
    if (user.node && (rc.username.empty() || !printable_word(rc.username)))
        return r.fail_type(user, "an ACL user name (printable, no spaces)");
    if (user.node && rc.password_file.empty() && rc.password_credential.empty())
        return r.fail(user.node->source(), user.path,
                      "username " + quoted(rc.username) +
                          " without a password: expected password_file or password_credential");

    const Field medium = field(*t, p, "medium");
    if (!r.string(medium, &rc.medium)) return false;
    if (medium.node && (rc.medium.empty() || rc.medium.size() > 32 || !printable_word(rc.medium)))
        return r.fail_type(medium, "a name of 1 to 32 printable characters");
    return true;
}

// ---- [pool.encryption] -----------------------------------------------------

bool read_encryption(Reader &r, const toml::node &n, const std::string &p, EncryptionConfig &ec) {
    const auto *t = n.as_table();
    if (!t) return r.fail_type(Field{&n, p}, "a table ([pool.encryption])");
    if (!r.check_keys(*t, kEncryptionKeys, "in " + p)) return false;
    ec.enabled = true;
    const char *id_form = "a key id of 1 to 31 letters, digits, '_', '.' or '-'";

    const Field keys = field(*t, p, "keys");
    if (!keys.node)
        return r.fail(t->source(), p,
                      "missing required key \"keys\" (e.g. [[" +
                          std::string("pool.encryption.keys") +
                          "]] with id = \"alpha-1\" and file = \"/etc/kvpool/alpha-1.key\")");
    const auto *arr = keys.node->as_array();
    if (!arr || arr->empty())
        return r.fail_type(keys, "an array of tables ([[pool.encryption.keys]]), at least one");
    for (size_t i = 0; i < arr->size(); i++) {
        const std::string kp = keys.path + "[" + std::to_string(i) + "]";
        const toml::node &kn = *arr->get(i);
        const auto *kt = kn.as_table();
        if (!kt) return r.fail_type(Field{&kn, kp}, "a table ([[pool.encryption.keys]])");
        if (!r.check_keys(*kt, kKeyKeys, "in " + kp)) return false;
        KeyConfig kc;
        const Field id = field(*kt, kp, "id");
        if (!id.node) return r.fail(kt->source(), kp, "missing required key \"id\"");
        if (!r.string(id, &kc.id)) return false;
        if (!crypto::valid_key_id(kc.id)) return r.fail_type(id, id_form);
        for (const KeyConfig &other : ec.keys)
            if (other.id == kc.id)
                return r.fail(id.node->source(), id.path,
                              quoted(kc.id) + " is configured twice; expected unique key ids");
        if (!r.path(field(*kt, kp, "file"), &kc.file)) return false;
        const Field cred = field(*kt, kp, "credential");
        if (!r.string(cred, &kc.credential)) return false;
        if (cred.node) {
            const std::string &c = kc.credential;
            if (c.empty() || c.size() > 255 || !printable_word(c) ||
                c.find('/') != std::string::npos)
                return r.fail_type(cred, "a systemd credential name (printable, no '/')");
        }
        if (kc.file.empty() == kc.credential.empty())
            return r.fail(
                kt->source(), kp,
                kc.file.empty()
                    ? "key " + quoted(kc.id) + " has neither file nor credential; expected one"
                    : "key " + quoted(kc.id) + " has both file and credential; expected one");
        ec.keys.push_back(std::move(kc));
    }

    const Field key = field(*t, p, "key");
    if (!key.node)
        return r.fail(t->source(), p,
                      "missing required key \"key\": the id of the key that seals new "
                      "snapshots and values (e.g. key = \"" +
                          ec.keys.front().id + "\")");
    if (!r.string(key, &ec.key)) return false;
    if (!crypto::valid_key_id(ec.key)) return r.fail_type(key, id_form);
    std::string ids;
    bool found = false;
    for (const KeyConfig &kc : ec.keys) {
        found |= kc.id == ec.key;
        ids += (ids.empty() ? "" : ", ") + kc.id;
    }
    if (!found)
        return r.fail(key.node->source(), key.path,
                      quoted(ec.key) + " is not the id of a configured key; configured: " + ids);
    return true;
}

// A ZeroMQ endpoint kvpoold binds or connects (kv_events.h): tcp://HOST:PORT
// (HOST may be *), ipc:///absolute/path or inproc://NAME. Checked here so a
// typo is a config error, not a socket that never opens.
std::string check_zmq_endpoint(std::string_view ep) {
    if (ep.starts_with("ipc://")) {
        const std::string_view path = ep.substr(6);
        if (path.empty() || path[0] != '/')
            return "expected an absolute path after \"ipc://\", e.g. ipc:///run/kvpool/events";
        if (path.size() > kMaxSocketPath)
            return "socket path of " + std::to_string(path.size()) +
                   " bytes is too long; expected at most " + std::to_string(kMaxSocketPath);
        return "";
    }
    if (ep.starts_with("inproc://")) return ep.size() > 9 ? "" : "expected a name after inproc://";
    if (!ep.starts_with("tcp://"))
        return "expected tcp://HOST:PORT, ipc:///PATH or inproc://NAME, e.g. tcp://*:5557";
    const std::string_view rest = ep.substr(6);
    const size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
        return "expected tcp://HOST:PORT, e.g. tcp://*:5557";
    const std::string_view port = rest.substr(colon + 1);
    uint32_t pnum = 0;
    bool ok = !port.empty() && port.size() <= 5;
    for (char c : port) {
        if (c < '0' || c > '9')
            ok = false;
        else
            pnum = pnum * 10 + uint32_t(c - '0');
    }
    if (!ok || pnum == 0 || pnum > 65535) return "port " + quoted(port) + ": expected 1 to 65535";
    return "";
}

// [pool.events]: vLLM-format KV events (EventsConfig). endpoint is required.
bool read_events(Reader &r, const toml::node &n, const std::string &p, EventsConfig &ev) {
    const auto *t = n.as_table();
    if (!t) return r.fail_type(Field{&n, p}, "a table ([pool.events])");
    if (!r.check_keys(*t, kEventsKeys, "in " + p)) return false;
    ev.enabled = true;

    const Field endpoint = field(*t, p, "endpoint");
    if (!endpoint.node)
        return r.fail(t->source(), p,
                      "missing required key \"endpoint\" (e.g. endpoint = \"tcp://*:5557\")");
    if (!r.string(endpoint, &ev.endpoint)) return false;
    if (std::string bad = check_zmq_endpoint(ev.endpoint); !bad.empty())
        return r.fail(endpoint.node->source(), endpoint.path, quoted(ev.endpoint) + ": " + bad);

    const Field replay = field(*t, p, "replay_endpoint");
    if (!r.string(replay, &ev.replay_endpoint)) return false;
    if (!ev.replay_endpoint.empty()) {
        if (std::string bad = check_zmq_endpoint(ev.replay_endpoint); !bad.empty())
            return r.fail(replay.node->source(), replay.path,
                          quoted(ev.replay_endpoint) + ": " + bad);
        if (ev.replay_endpoint == ev.endpoint)
            return r.fail(replay.node->source(), replay.path,
                          quoted(ev.replay_endpoint) +
                              " is also the endpoint; expected another address");
    }

    const Field topic = field(*t, p, "topic");
    if (!r.string(topic, &ev.topic)) return false;
    if (ev.topic.size() > 255 || ev.topic.find('\0') != std::string::npos)
        return r.fail_type(topic, "a topic of at most 255 bytes without NUL");

    static constexpr std::array<std::string_view, 2> kEncodings{"array", "map"};
    size_t enc = SIZE_MAX;
    if (!r.choice(field(*t, p, "encoding"), kEncodings, &enc)) return false;
    if (enc != SIZE_MAX) ev.encoding = enc == 0 ? EventEncoding::Array : EventEncoding::Map;
    static constexpr std::array<std::string_view, 2> kHashForms{"int", "bytes"};
    size_t form = SIZE_MAX;
    if (!r.choice(field(*t, p, "hash_form"), kHashForms, &form)) return false;
    if (form != SIZE_MAX) ev.hash_form = form == 0 ? HashForm::Int : HashForm::Bytes;

    const Field medium = field(*t, p, "medium");
    if (!r.string(medium, &ev.medium)) return false;
    if (ev.medium.empty() || ev.medium.size() > 63)
        return r.fail_type(medium, "a medium name of 1 to 63 bytes, e.g. \"CPU\"");

    return r.u32(field(*t, p, "buffer_steps"), 0, 1000000, &ev.buffer_steps) &&
           r.u32(field(*t, p, "hwm"), 0, 10000000, &ev.hwm) &&
           r.u32(field(*t, p, "max_batch"), 1, 65536, &ev.max_batch);
}

bool read_pool(Reader &r, const toml::table &t, const std::string &p, PoolConfig &pool) {
    if (!r.check_keys(t, kPoolKeys, "in " + p)) return false;

    const Field name = field(t, p, "name");
    if (!name.node)
        return r.fail(t.source(), p, "missing required key \"name\" (e.g. name = \"default\")");
    if (!r.string(name, &pool.name)) return false;
    if (!valid_pool_name(pool.name))
        return r.fail_type(name, "a pool name of 1 to 63 letters, digits, '_', '.' or '-', "
                                 "not \".\" or \"..\"");

    const Field size = field(t, p, "size");
    if (!size.node)
        return r.fail(t.source(), p, "missing required key \"size\" (e.g. size = \"1G\")");
    if (!r.size(size, &pool.size)) return false;
    if (pool.size < kMinPoolSize)
        return r.fail(size.node->source(), size.path,
                      format_size(pool.size) + " (" + std::to_string(pool.size) +
                          " bytes) is too small; expected at least " + format_size(kMinPoolSize));

    static constexpr std::array<std::string_view, 3> kHuge{"never", "prefer", "require"};
    static constexpr std::array<HugepageMode, 3> kHugeValues{
        HugepageMode::Never, HugepageMode::Prefer, HugepageMode::Require};
    size_t huge = SIZE_MAX;
    if (!r.choice(field(t, p, "hugepages"), kHuge, &huge)) return false;
    if (huge != SIZE_MAX) pool.hugepages = kHugeValues[huge];

    const Field numa = field(t, p, "numa_node");
    if (numa.node) {
        const std::string expected =
            "a node number from 0 to " + std::to_string(kMaxNumaNode) + ", \"local\" or \"none\"";
        if (const auto *i = numa.node->as_integer()) {
            if (i->get() < 0 || i->get() > kMaxNumaNode) return r.fail_type(numa, expected);
            pool.numa_node = static_cast<int>(i->get());
        } else if (const auto *s = numa.node->as_string(); s && s->get() == "local") {
            pool.numa_node = kNumaLocal;
        } else if (s && s->get() == "none") {
            pool.numa_node = kNumaNone;
        } else {
            return r.fail_type(numa, expected);
        }
    }

    const Field eviction = field(t, p, "eviction");
    if (!r.string(eviction, &pool.eviction)) return false;
    if (eviction.node &&
        std::ranges::find(kEvictionPolicies, pool.eviction) == kEvictionPolicies.end())
        return r.fail(eviction.node->source(), eviction.path,
                      "unknown eviction policy " + quoted(pool.eviction) +
                          "; known policies: " + join(kEvictionPolicies));

    if (!r.group(field(t, p, "group"), &pool.group, true) ||
        !r.mode(field(t, p, "mode"), &pool.mode) ||
        !r.boolean(field(t, p, "prefault"), &pool.prefault))
        return false;

    const Field high = field(t, p, "high_watermark");
    const Field low = field(t, p, "low_watermark");
    if (!r.fraction(high, &pool.high_watermark) || !r.fraction(low, &pool.low_watermark))
        return false;
    if (pool.low_watermark >= pool.high_watermark) {
        const toml::node *at = low.node ? low.node : high.node;
        return r.fail(at->source(), low.path,
                      fmt_double(pool.low_watermark) + " must be below high_watermark (" +
                          fmt_double(pool.high_watermark) + ")");
    }

    const Field slab = field(t, p, "slab_size");
    if (!r.size(slab, &pool.slab_size)) return false;
    if (pool.slab_size != 0 && (!std::has_single_bit(pool.slab_size) || pool.slab_size < kMinSlab ||
                                pool.slab_size > kMaxSlab))
        return r.fail(slab.node->source(), slab.path,
                      format_size(pool.slab_size) + " (" + std::to_string(pool.slab_size) +
                          " bytes): expected a power of two from " + format_size(kMinSlab) +
                          " to " + format_size(kMaxSlab));

    const Field avg = field(t, p, "avg_block_size");
    if (!r.size(avg, &pool.avg_block_size)) return false;
    const uint64_t slab_bytes = pool.slab_size ? pool.slab_size : kDefaultSlab;
    if (pool.avg_block_size != 0 &&
        (pool.avg_block_size < kMinAvgBlock || pool.avg_block_size > slab_bytes))
        return r.fail(avg.node->source(), avg.path,
                      format_size(pool.avg_block_size) + " (" +
                          std::to_string(pool.avg_block_size) + " bytes): expected " +
                          format_size(kMinAvgBlock) + " to the slab size (" +
                          format_size(slab_bytes) + ")");

    if (const toml::node *ev = t.get("events"))
        if (!read_events(r, *ev, p + ".events", pool.events)) return false;

    // The change feed (uapi/kvpool/region.h KV_FEED_*): 0 or a power of two.
    const Field feed = field(t, p, "feed_slots");
    if (!r.u32(feed, 0, KV_FEED_MAX_SLOTS, &pool.feed_slots)) return false;
    if (pool.feed_slots != 0 &&
        (!std::has_single_bit(pool.feed_slots) || pool.feed_slots < KV_FEED_MIN_SLOTS))
        return r.fail(
            feed.node->source(), feed.path,
            std::to_string(pool.feed_slots) + ": expected 0 (no feed) or a power of two from " +
                std::to_string(KV_FEED_MIN_SLOTS) + " to " + std::to_string(KV_FEED_MAX_SLOTS));

    // At least 2: kvpoold itself takes one client slot of every pool.
    return r.u32(field(t, p, "max_clients"), 2, KV_MAX_CLIENTS, &pool.max_clients) &&
           r.u32(field(t, p, "max_entries"), 64, 0xfffffff0U, &pool.max_entries) &&
           r.path(field(t, p, "snapshot_dir"), &pool.snapshot_dir) &&
           r.boolean(field(t, p, "persist_on_stop"), &pool.persist_on_stop) &&
           r.boolean(field(t, p, "restore_on_start"), &pool.restore_on_start) &&
           r.boolean(field(t, p, "secure_erase"), &pool.secure_erase) &&
           (!t.get("encryption") ||
            read_encryption(r, *t.get("encryption"), p + ".encryption", pool.encryption)) &&
           (!t.get("remote") || read_remote(r, *t.get("remote"), p + ".remote", pool.remote));
}

std::expected<DaemonConfig, std::string> check(Reader &r, const toml::table &root) {
    DaemonConfig cfg;
    if (!r.check_keys(root, kTopKeys, "at top level")) return std::unexpected(r.error());

    if (const toml::node *d = root.get("daemon")) {
        const auto *t = d->as_table();
        if (!t) {
            r.fail_type(Field{d, "daemon"}, "a table ([daemon])");
            return std::unexpected(r.error());
        }
        if (!read_daemon(r, *t, cfg)) return std::unexpected(r.error());
    }

    if (const toml::node *pn = root.get("pool")) {
        const auto *arr = pn->as_array();
        if (!arr) {
            r.fail_type(Field{pn, "pool"}, "an array of tables (write [[pool]], not [pool])");
            return std::unexpected(r.error());
        }
        for (size_t i = 0; i < arr->size(); i++) {
            const std::string p = "pool[" + std::to_string(i) + "]";
            const toml::node &n = *arr->get(i);
            const auto *t = n.as_table();
            if (!t) {
                r.fail_type(Field{&n, p}, "a table ([[pool]])");
                return std::unexpected(r.error());
            }
            PoolConfig pool;
            if (!read_pool(r, *t, p, pool)) return std::unexpected(r.error());
            for (size_t j = 0; j < cfg.pools.size(); j++) {
                if (cfg.pools[j].name == pool.name) {
                    r.fail(t->get("name")->source(), p + ".name",
                           quoted(pool.name) + " is already the name of pool[" + std::to_string(j) +
                               "]; expected a unique name");
                    return std::unexpected(r.error());
                }
            }
            cfg.pools.push_back(std::move(pool));
        }
    }

    for (PoolConfig &pool : cfg.pools)
        if (pool.snapshot_dir.empty()) pool.snapshot_dir = cfg.state_dir;
    return cfg;
}

} // namespace

std::string_view to_string(HugepageMode m) {
    switch (m) {
    case HugepageMode::Never:
        return "never";
    case HugepageMode::Prefer:
        return "prefer";
    case HugepageMode::Require:
        return "require";
    }
    return "unknown";
}

std::string_view to_string(LogLevel l) {
    switch (l) {
    case LogLevel::Error:
        return "error";
    case LogLevel::Warning:
        return "warning";
    case LogLevel::Notice:
        return "notice";
    case LogLevel::Info:
        return "info";
    case LogLevel::Debug:
        return "debug";
    }
    return "unknown";
}

std::expected<MetricsEndpoint, std::string> parse_metrics(std::string_view s) {
    const std::string seen = "metrics " + quoted(s) + ": ";
    MetricsEndpoint ep;
    if (s.empty()) return ep;

    if (s.starts_with("unix:")) {
        const std::string_view path = s.substr(5);
        if (path.empty() || path[0] != '/' || path.find('\0') != std::string_view::npos)
            return std::unexpected(seen + "expected an absolute socket path after \"unix:\"");
        if (path.size() > kMaxSocketPath)
            return std::unexpected(seen + "socket path of " + std::to_string(path.size()) +
                                   " bytes is too long; expected at most " +
                                   std::to_string(kMaxSocketPath));
        ep.kind = MetricsEndpoint::Kind::Unix;
        ep.path = path;
        return ep;
    }

    if (!s.starts_with("tcp:"))
        return std::unexpected(seen + "expected \"\" (off), \"tcp:127.0.0.1:PORT\", "
                                      "\"tcp:[::1]:PORT\" or \"unix:/absolute/path\"");
    const std::string_view rest = s.substr(4);
    std::string_view host, port;
    bool v6 = false;
    if (rest.starts_with("[")) {
        const size_t close = rest.find(']');
        if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            return std::unexpected(seen + "expected tcp:[::1]:PORT");
        host = rest.substr(1, close - 1);
        port = rest.substr(close + 2);
        v6 = true;
    } else {
        const size_t colon = rest.rfind(':');
        if (colon == std::string_view::npos)
            return std::unexpected(seen + "expected tcp:ADDRESS:PORT, e.g. tcp:127.0.0.1:9464");
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            return std::unexpected(seen + "write an IPv6 address in brackets, e.g. tcp:[::1]:9464");
    }

    uint32_t pnum = 0;
    bool port_ok = !port.empty() && port.size() <= 5;
    for (char c : port) {
        if (c < '0' || c > '9')
            port_ok = false;
        else
            pnum = pnum * 10 + uint32_t(c - '0');
    }
    if (!port_ok || pnum == 0 || pnum > 65535)
        return std::unexpected(seen + "port " + quoted(port) + ": expected 1 to 65535");

    // The metrics endpoint has no authentication: only loopback may listen.
    const std::string h(host);
    const std::string loopback_only =
        "expected a loopback address (127.0.0.0/8 or [::1]) since the endpoint has no "
        "authentication; got " +
        quoted(host);
    if (v6) {
        in6_addr a6{};
        if (inet_pton(AF_INET6, h.c_str(), &a6) != 1 || !IN6_IS_ADDR_LOOPBACK(&a6))
            return std::unexpected(seen + loopback_only);
    } else {
        in_addr a4{};
        if (inet_pton(AF_INET, h.c_str(), &a4) != 1 || (ntohl(a4.s_addr) >> 24) != 127)
            return std::unexpected(seen + loopback_only);
    }
    ep.kind = MetricsEndpoint::Kind::Tcp;
    ep.host = h;
    ep.port = static_cast<uint16_t>(pnum);
    return ep;
}

std::expected<DaemonConfig, std::string> parse_config(std::string_view text,
                                                      std::string_view origin) {
    try {
        Reader r(origin);
#if TOML_EXCEPTIONS
        toml::table root;
        try {
            root = toml::parse(text, origin);
        } catch (const toml::parse_error &e) {
            r.fail(e.source(), "", "TOML syntax error: " + std::string(e.description()));
            return std::unexpected(r.error());
        }
#else
        toml::parse_result res = toml::parse(text, origin);
        if (!res) {
            r.fail(res.error().source(), "",
                   "TOML syntax error: " + std::string(res.error().description()));
            return std::unexpected(r.error());
        }
        toml::table root = std::move(res).table();
#endif
        return check(r, root);
    } catch (const std::exception &e) {
        // Only allocation failure is expected here; keep the promise not to throw.
        return std::unexpected(std::string(origin) + ": " + e.what());
    }
}

std::expected<DaemonConfig, std::string> load_config(const std::string &path) {
    try {
        const std::string what = "config file " + quoted(path) + ": ";
        std::FILE *f = std::fopen(path.c_str(), "re");
        if (!f) return std::unexpected(what + std::strerror(errno));
        std::string text;
        char buf[16384];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
            text.append(buf, n);
            if (text.size() > kMaxConfigBytes) {
                std::fclose(f);
                return std::unexpected(what + "larger than " + format_size(kMaxConfigBytes) +
                                       "; expected a small text file");
            }
        }
        const int err = std::ferror(f) ? errno : 0;
        std::fclose(f);
        if (err) return std::unexpected(what + std::strerror(err));
        return parse_config(text, path);
    } catch (const std::exception &e) {
        return std::unexpected("config file " + quoted(path) + ": " + e.what());
    }
}

std::expected<std::string, std::string> read_remote_password(const RemoteConfig &rc) {
    if (rc.password_file.empty() && rc.password_credential.empty()) return std::string();
    auto pw = read_secret(rc.password_file, rc.password_credential,
                          rc.password_file.empty() ? "password" : "password_file", 4096);
    if (!pw) return pw;
    while (!pw->empty() && (pw->back() == '\n' || pw->back() == '\r'))
        pw->pop_back();
    if (pw->empty())
        return std::unexpected((rc.password_file.empty()
                                    ? "password credential " + rc.password_credential
                                    : "password_file " + rc.password_file) +
                               " is empty; expected the password");
    return pw;
}

std::string describe(const DaemonConfig &cfg) {
    std::string s = "control_socket=" + cfg.control_socket + " shm_dir=" + cfg.shm_dir +
                    " hugepage_dir=" + cfg.hugepage_dir + " state_dir=" + cfg.state_dir +
                    " admin_group=" + cfg.admin_group +
                    " metrics=" + (cfg.metrics.empty() ? std::string("off") : cfg.metrics) +
                    " reap_interval_ms=" + std::to_string(cfg.reap_interval_ms) +
                    " evict_interval_ms=" + std::to_string(cfg.evict_interval_ms) +
                    " log_level=" + std::string(to_string(cfg.log_level)) +
                    " pools=" + std::to_string(cfg.pools.size());
    for (const PoolConfig &p : cfg.pools) {
        s += " [" + p.name + " " + format_size(p.size) +
             " hugepages=" + std::string(to_string(p.hugepages)) + " numa=";
        s += p.numa_node == kNumaNone    ? std::string("none")
             : p.numa_node == kNumaLocal ? std::string("local")
                                         : std::to_string(p.numa_node);
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", p.mode);
        s += " group=" + (p.group.empty() ? cfg.admin_group : p.group) + " mode=" + mode + "]";
    }
    return s;
}

} // namespace kv::daemon
