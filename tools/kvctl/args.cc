// SPDX-License-Identifier: MIT
#include "args.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <kv/kv.h>
#include <sys/un.h>

namespace kvctl {

namespace {

using kv::control::PoolName;

constexpr std::span<const Option> kNoOptions;
constexpr Option kCreateOptions[] = {
    {"--size", "SIZE",
     "bytes, or with a binary K, M, G or T suffix: 512M, 16G, 1.5G (a fraction is rounded down "
     "to whole bytes) (required)"},
    {"--hugepages", "MODE", "require, prefer (default) or never"},
    {"--numa", "NODE", "a node number, local (the daemon's node) or none (default)"},
    {"--mode", "MODE", "octal mode of the pool file (default 0660)"},
    {"--prefault", "", "fault every page in at creation"},
    {"--policy", "POLICY", "eviction policy: prefix (default), lru, lfu, fifo, priority or clock"},
    {"--no-persist", "",
     "do not persist its blocks at stop nor restore them at start (the pool is kept)"},
    {"--max-entries", "N", "at most N entry slots, 64.. (default: capacity / 16 KiB)"},
    {"--secure-erase", "",
     "zero each block's bytes before its space is reused (engines need libkv ABI v1.4)"},
};
constexpr Option kEntriesOptions[] = {
    {"--limit", "N", "show at most N rows (default: every entry; pages of up to 2048 rows)"},
};
constexpr Option kEvictOptions[] = {
    {"--percent", "N",
     "percent of the pool's unpinned bytes, 0..100 (0: evict nothing) (required)"},
};
constexpr Option kSnapshotOptions[] = {
    {"--path", "FILE",
     "snapshot file, opened by kvpoold: use an absolute path (default: the pool's)"},
};
constexpr Option kRestoreOptions[] = {
    {"--path", "FILE",
     "snapshot file, opened by kvpoold: use an absolute path (default: the pool's)"},
    {"--force", "", "take a snapshot written from another pool (root only)"},
};
constexpr Option kVerifyOptions[] = {
    {"--remove", "", "remove each block that fails its checksum"},
};
constexpr Option kDetachOptions[] = {
    {"--pid", "PID", "the client's process id (required)"},
    {"--kill", "", "send SIGKILL first if the process is alive"},
};

constexpr Verb kVerbs[] = {
    {KV_CTL_OP_LIST, kNoOptions, "", "Show every pool as a table."},
    {KV_CTL_OP_STATUS, kNoOptions, "[POOL]",
     "Show one pool in detail, or every pool as list does."},
    {KV_CTL_OP_CREATE, kCreateOptions,
     "POOL --size SIZE [--hugepages MODE] [--numa NODE] [--mode MODE] [--prefault] [--policy "
     "POLICY] "
     "[--no-persist] [--max-entries N] [--secure-erase]",
     "Create a pool (needs uid 0 or the daemon's admin group). kvpoold keeps it across restarts, "
     "and persists "
     "its blocks at stop and restores them at start unless --no-persist."},
    {KV_CTL_OP_DESTROY, kNoOptions, "POOL",
     "Remove a pool (attached processes keep their mapping)."},
    {KV_CTL_OP_ENTRIES, kEntriesOptions, "POOL [--limit N]",
     "List a pool's entries, page by page as they arrive."},
    {KV_CTL_OP_HEALTH, kNoOptions, "POOL",
     "Check a pool's tables (not its block data: see verify); exits 1 when unhealthy."},
    {KV_CTL_OP_VERIFY, kVerifyOptions, "POOL [--remove]",
     "Read every block and check its checksum (no timeout unless --timeout); exits 1 when a block "
     "fails it, removed or not."},
    {KV_CTL_OP_EVICT, kEvictOptions, "POOL --percent N",
     "Evict part of a pool's unpinned bytes now."},
    {KV_CTL_OP_PERSIST, kSnapshotOptions, "POOL [--path FILE]",
     "Write a pool's snapshot (no timeout unless --timeout)."},
    {KV_CTL_OP_RESTORE, kRestoreOptions, "POOL [--path FILE] [--force]",
     "Load a pool from a snapshot (no timeout unless --timeout)."},
    {KV_CTL_OP_CLIENTS, kNoOptions, "POOL", "List the processes attached to a pool."},
    {KV_CTL_OP_DETACH, kDetachOptions, "POOL --pid PID [--kill]",
     "Release a client's slot, pins and reservations."},
    {KV_CTL_OP_STATS, kNoOptions, "", "Show the daemon's counters, then each pool's."},
    {KV_CTL_OP_VERSION, kNoOptions, "", "Show kvctl's and kvpoold's versions."},
    {KV_CTL_OP_REMOTE_STATUS, kNoOptions, "[POOL]",
     "Show the remote tier (Redis Cluster) of a pool, or of every pool that has one."},
};

} // namespace

const Verb *find_verb(std::string_view name) {
    for (const Verb &v : kVerbs)
        if (v.name() == name) return &v;
    return nullptr;
}

std::string verb_names() {
    std::string s;
    for (const Verb &v : kVerbs)
        s += std::string(s.empty() ? "" : ", ") + std::string(v.name());
    return s + ", help";
}

// ---- Help ------------------------------------------------------------------

constexpr const char *kGlobalOptions =
    "Options (before or after the verb):\n"
    "  --socket PATH      the control socket (default: $KVPOOL_SOCKET, else\n"
    "                     /run/kvpool/control)\n"
    "  --json             print the daemon's JSON document instead of tables; a\n"
    "                     failure prints {\"error\": {\"exit\": N, \"errno\": E or null,\n"
    "                     \"message\": TEXT}} on stdout instead (and the message on\n"
    "                     stderr, as without --json)\n"
    "  --timeout SECONDS  give up waiting for the daemon after SECONDS (default 30;\n"
    "                     persist, restore and verify wait forever); 0: wait forever\n"
    "  -h, --help         show this help; VERB --help or help VERB shows a verb's\n"
    "  --                 end of options: a pool name after it may start with -\n";

constexpr const char *kExitCodes =
    "Exit status:\n"
    "  0  success\n"
    "  1  the daemon refused or failed the request; health: the pool is unhealthy;\n"
    "     verify: a block failed its checksum (with --remove: and was removed)\n"
    "  2  usage error: unknown verb, bad or missing argument\n"
    "  3  cannot connect to kvpoold (not running, wrong --socket, socket permissions,\n"
    "     or it refused the connection: too many open)\n"
    "  4  permission denied by kvpoold\n"
    "  5  no such pool\n"
    "  6  the pool already exists\n"
    "  7  protocol error: malformed or truncated response, connection closed, timeout\n"
    "  8  restore: the snapshot was truncated or damaged, or blocks were dropped;\n"
    "     the verified blocks were restored (the output says how many)\n"
    "  9  detach: the process is not attached to the pool\n";

void print_usage(FILE *out) {
    std::fputs("Usage: kvctl [--socket PATH] [--json] [--timeout SECONDS] VERB [ARGS]\n\n"
               "Query and manage the pools of kvpoold, the kvpool daemon.\n\n"
               "Verbs:\n",
               out);
    constexpr size_t kCol = 22;
    for (const Verb &v : kVerbs) {
        std::string left = "  ";
        left += v.name();
        if (!v.synopsis.empty()) {
            left += ' ';
            left += v.synopsis;
        }
        if (left.size() + 2 > kCol)
            left += "\n" + std::string(kCol, ' ');
        else
            left.resize(kCol, ' ');
        std::fprintf(out, "%s%.*s\n", left.c_str(), int(v.help.size()), v.help.data());
    }
    // Not control ops: they talk to the pool's own sockets (events.h).
    std::fprintf(out, "  events tail POOL [--json] [--from SEQ] [--count N]\n%*s%s\n", int(kCol),
                 "", "Print the pool's vLLM-format KV events as they come (events tail --help).");
    std::fprintf(out, "%-*s%s\n\n", int(kCol), "  help VERB", "Show a verb's options.");
    std::fputs(kGlobalOptions, out);
    std::fputs("\n", out);
    std::fputs(kExitCodes, out);
}

void print_verb_usage(const Verb &v, FILE *out) {
    std::fprintf(out, "Usage: kvctl [OPTIONS] %.*s%s%.*s\n\n%.*s\n", int(v.name().size()),
                 v.name().data(), v.synopsis.empty() ? "" : " ", int(v.synopsis.size()),
                 v.synopsis.data(), int(v.help.size()), v.help.data());
    if (!v.options.empty()) {
        std::fputs("\nVerb options:\n", out);
        auto left = [](const Option &o) {
            return "  " + std::string(o.name) + (o.value.empty() ? "" : " ") + std::string(o.value);
        };
        size_t w = 0;
        for (const Option &o : v.options)
            w = std::max(w, left(o).size() + 2);
        for (const Option &o : v.options)
            std::fprintf(out, "%-*s%.*s\n", int(w), left(o).c_str(), int(o.help.size()),
                         o.help.data());
    }
    std::fputs("\n", out);
    std::fputs(kGlobalOptions, out);
    std::fputs("\nRun kvctl --help for the exit codes.\n", out);
}

Failure usage_error(const Command &c, std::string message) {
    std::string hint = c.verb ? "Try 'kvctl help " + std::string(c.verb->name()) + "'."
                              : std::string("Try 'kvctl --help'.");
    return Failure{kExitUsage, std::move(message), std::move(hint)};
}

namespace {

std::optional<uint64_t> parse_uint(std::string_view s) {
    uint64_t v = 0;
    if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt; // no sign, no space
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return v;
}

Result<double> parse_timeout(const Command &c, const std::string &s) {
    errno = 0;
    char *end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v) || v < 0 ||
        v > kMaxTimeout)
        return std::unexpected(
            usage_error(c, "--timeout " + quote(s) +
                               ": expected a number of seconds from 0 (wait forever) to 31536000"));
    return v;
}

} // namespace

Result<Command> parse_command(int argc, char **argv, JsonWanted &wanted) {
    Command c;
    if (const char *env = std::getenv("KVPOOL_SOCKET"); env && *env) {
        c.socket = env;
        c.socket_source = "$KVPOOL_SOCKET";
    }
    bool socket_given = false, json_given = false;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        wanted.next = i + 1;
        const std::string_view arg = argv[i];
        const bool is_option = !options_done && arg.size() > 1 && arg[0] == '-' && arg != "--";
        if (!options_done && arg == "--") {
            wanted.options_done = options_done = true;
            continue;
        }
        if (!is_option) {
            if (c.verb || c.help_verb) {
                c.positional.emplace_back(arg);
            } else if (arg == "help") {
                c.help_verb = true;
            } else if (!(c.verb = find_verb(arg))) {
                // A verb of two words ("remote status").
                if (i + 1 < argc && (c.verb = find_verb(std::string(arg) + " " + argv[i + 1])))
                    wanted.next = ++i + 1;
                else
                    return std::unexpected(usage_error(c, "unknown verb " + quote(arg) +
                                                              "; expected one of " + verb_names()));
            }
            continue;
        }

        // --name=value or --name value.
        std::string_view name = arg;
        std::optional<std::string> inline_value;
        if (size_t eq = arg.find('='); eq != std::string_view::npos && arg.starts_with("--")) {
            name = arg.substr(0, eq);
            inline_value = std::string(arg.substr(eq + 1));
        }
        auto take_value = [&](std::string_view what) -> Result<std::string> {
            if (inline_value) return *inline_value;
            if (i + 1 >= argc)
                return std::unexpected(usage_error(
                    c, std::string(name) + ": missing value; expected " + std::string(what)));
            wanted.next = i + 2;
            return std::string(argv[++i]);
        };
        auto no_value = [&]() -> Result<void> {
            if (inline_value)
                return std::unexpected(
                    usage_error(c, std::string(name) + " takes no value; got " + quote(arg)));
            return {};
        };

        if (name == "-h" || name == "--help") {
            if (auto r = no_value(); !r) return std::unexpected(r.error());
            c.help = true;
        } else if (name == "--json") {
            if (auto r = no_value(); !r) return std::unexpected(r.error());
            wanted.json = true;
            if (json_given) return std::unexpected(usage_error(c, "--json: given more than once"));
            json_given = c.json = true;
        } else if (name == "--socket") {
            auto v = take_value("the path of kvpoold's control socket");
            if (!v) return std::unexpected(v.error());
            if (socket_given)
                return std::unexpected(usage_error(c, "--socket: given more than once"));
            socket_given = true;
            c.socket = *v;
            c.socket_source = "--socket";
        } else if (name == "--timeout") {
            auto v = take_value("a number of seconds (0: wait forever)");
            if (!v) return std::unexpected(v.error());
            if (c.timeout_s)
                return std::unexpected(usage_error(c, "--timeout: given more than once"));
            auto t = parse_timeout(c, *v);
            if (!t) return std::unexpected(t.error());
            c.timeout_s = *t;
        } else {
            const Option *opt = nullptr;
            if (c.verb)
                for (const Option &o : c.verb->options)
                    if (o.name == name) opt = &o;
            if (!opt) {
                std::string msg = "unknown option " + quote(name);
                if (c.verb) {
                    msg += " for " + std::string(c.verb->name());
                    std::string known;
                    for (const Option &o : c.verb->options)
                        known += (known.empty() ? "" : ", ") + std::string(o.name);
                    msg += known.empty() ? "; it takes none besides --socket, --json, --timeout"
                                         : "; expected one of " + known;
                } else {
                    msg += "; verb options go after the verb";
                }
                return std::unexpected(usage_error(c, msg));
            }
            if (c.option(opt->name))
                return std::unexpected(
                    usage_error(c, std::string(opt->name) + ": given more than once"));
            std::string value;
            if (opt->value.empty()) {
                if (auto r = no_value(); !r) return std::unexpected(r.error());
            } else {
                auto v = take_value(opt->value);
                if (!v) return std::unexpected(v.error());
                value = std::move(*v);
            }
            c.options.emplace_back(opt, std::move(value));
        }
    }
    return c;
}

namespace {

// Pool names as the protocol defines them: [A-Za-z0-9_.-]{1,63}, not "." or "..".
Result<void> check_pool_name(const Command &c, const std::string &name) {
    const std::string what = "POOL " + quote(name) + ": ";
    switch (kv::control::check_pool_name(name)) {
    case kv::control::NameProblem::None:
        return {};
    case kv::control::NameProblem::Empty:
        return std::unexpected(usage_error(c, what + "expected a pool name"));
    case kv::control::NameProblem::TooLong:
        return std::unexpected(usage_error(c, what + strf("%zu bytes long; expected at most %d",
                                                          name.size(), KV_CTL_NAME_MAX - 1)));
    case kv::control::NameProblem::BadCharacter:
        return std::unexpected(
            usage_error(c, what + "expected only letters, digits, '_', '.' and '-'"));
    case kv::control::NameProblem::Dots:
        break;
    }
    return std::unexpected(usage_error(c, what + "not a valid pool name"));
}

} // namespace

Result<void> check_socket_path(const Command &c) {
    const size_t max = sizeof(sockaddr_un::sun_path) - 1;
    if (c.socket.empty())
        return std::unexpected(
            usage_error(c, c.socket_source + ": expected the path of kvpoold's control socket"));
    if (c.socket.size() > max)
        return std::unexpected(
            usage_error(c, c.socket_source + " " + quote(c.socket) +
                               strf(": %zu bytes long; a unix socket path holds at most %zu",
                                    c.socket.size(), max)));
    return {};
}

Result<kv_ctl_request> build_request(const Command &c) {
    kv_ctl_request req;
    std::memset(&req, 0, sizeof req); // reserved fields and padding must be zero
    const Verb &v = *c.verb;

    if (v.pool() == PoolName::Ignored && !c.positional.empty())
        return std::unexpected(usage_error(c, std::string(v.name()) + ": unexpected argument " +
                                                  quote(c.positional[0]) + "; " +
                                                  std::string(v.name()) + " takes no pool name"));
    if (v.pool() == PoolName::Required && c.positional.empty())
        return std::unexpected(
            usage_error(c, std::string(v.name()) + ": missing POOL; expected a pool name"));
    if (c.positional.size() > 1)
        return std::unexpected(usage_error(c, std::string(v.name()) + ": unexpected argument " +
                                                  quote(c.positional[1]) + "; expected one POOL"));
    if (!c.positional.empty()) {
        const std::string &name = c.positional[0];
        if (auto r = check_pool_name(c, name); !r) return std::unexpected(r.error());
        std::memcpy(req.pool, name.data(), name.size());
    }

    auto bad = [&](std::string_view opt, const std::string &value, std::string_view expected) {
        return std::unexpected(
            usage_error(c, std::string(opt) + " " + quote(value) + ": " + std::string(expected)));
    };
    auto required = [&](std::string_view opt) -> Result<std::string> {
        if (const std::string *s = c.option(opt)) return *s;
        return std::unexpected(usage_error(c, std::string(v.name()) + ": missing " +
                                                  std::string(opt) + "; it is required"));
    };

    switch (v.op) {
    case KV_CTL_OP_CREATE: {
        auto size_text = required("--size");
        if (!size_text) return std::unexpected(size_text.error());
        auto size = kv::detail::parse_size(*size_text);
        // parse_size's message starts with "size \"TEXT\": ", naming the option completes it.
        if (!size) return std::unexpected(usage_error(c, "--" + size.error()));
        if (*size == 0) return bad("--size", *size_text, "expected a size above 0");
        req.size = *size;

        req.hugepages = KV_HUGEPAGES_PREFER;
        if (const std::string *h = c.option("--hugepages")) {
            if (*h == "require")
                req.hugepages = KV_HUGEPAGES_REQUIRE;
            else if (*h == "prefer")
                req.hugepages = KV_HUGEPAGES_PREFER;
            else if (*h == "never")
                req.hugepages = KV_HUGEPAGES_NEVER;
            else
                return bad("--hugepages", *h, "expected require, prefer or never");
        }

        req.numa_node = KV_CTL_NUMA_NONE;
        if (const std::string *n = c.option("--numa")) {
            if (*n == "none") {
                req.numa_node = KV_CTL_NUMA_NONE;
            } else if (*n == "local") {
                req.numa_node = KV_CTL_NUMA_LOCAL;
            } else {
                // Linux has at most 1024 nodes (NODES_SHIFT 10).
                auto node = parse_uint(*n);
                if (!node || *node > 1023)
                    return bad("--numa", *n, "expected a node number 0..1023, local or none");
                req.numa_node = uint32_t(*node);
            }
        }

        if (const std::string *m = c.option("--mode")) {
            auto mode = kv::detail::parse_mode(*m);
            if (!mode) return std::unexpected(usage_error(c, "--" + mode.error()));
            // The protocol reads 0 as "the default, 0660": refuse it rather than surprise.
            if (*mode == 0)
                return bad("--mode", *m,
                           "expected a non-zero mode (0 would mean the default, 0660)");
            req.mode = *mode;
        }
        if (c.option("--prefault")) req.flags |= KV_CTL_F_PREFAULT;
        if (c.option("--no-persist")) req.flags |= KV_CTL_F_NO_PERSIST;
        if (c.option("--secure-erase")) req.flags |= KV_CTL_F_SECURE_ERASE;
        if (const std::string *m = c.option("--max-entries")) {
            auto n = parse_uint(*m);
            if (!n || *n < 64 || *n > 0xfffffff0ULL)
                return bad("--max-entries", *m,
                           "expected a number of entry slots from 64 to 4294967280");
            req.max_entries = uint32_t(*n);
        }
        if (const std::string *pol = c.option("--policy")) {
            int v = kv_evict_policy_parse(pol->c_str());
            if (v < 0)
                return bad("--policy", *pol, "expected prefix, lru, lfu, fifo, priority or clock");
            req.flags |= KV_CTL_F_POLICY;
            req.evict_policy = uint32_t(v);
        }
        break;
    }
    case KV_CTL_OP_ENTRIES:
        if (const std::string *l = c.option("--limit")) {
            auto n = parse_uint(*l);
            if (!n || *n == 0) return bad("--limit", *l, "expected a row count of at least 1");
            req.arg = *n;
        }
        break;
    case KV_CTL_OP_EVICT: {
        auto p = required("--percent");
        if (!p) return std::unexpected(p.error());
        std::string_view digits = *p;
        if (digits.ends_with('%')) digits.remove_suffix(1);
        auto n = parse_uint(digits);
        if (!n || *n > 100) return bad("--percent", *p, "expected a whole number 0..100");
        req.arg = *n;
        break;
    }
    case KV_CTL_OP_PERSIST:
    case KV_CTL_OP_RESTORE:
        if (const std::string *path = c.option("--path")) {
            if (path->empty()) return bad("--path", *path, "expected a file path");
            if (path->size() >= KV_CTL_PATH_MAX)
                return bad(
                    "--path", *path,
                    strf("%zu bytes long; expected at most %d", path->size(), KV_CTL_PATH_MAX - 1));
            std::memcpy(req.path, path->data(), path->size());
        }
        if (c.option("--force")) req.flags |= KV_CTL_F_FORCE;
        break;
    case KV_CTL_OP_DETACH: {
        auto p = required("--pid");
        if (!p) return std::unexpected(p.error());
        auto pid = parse_uint(*p);
        if (!pid || *pid < 1 || *pid > uint64_t(INT32_MAX))
            return bad("--pid", *p, "expected a process id 1..2147483647");
        req.arg = *pid;
        if (c.option("--kill")) req.flags |= KV_CTL_F_KILL;
        break;
    }
    case KV_CTL_OP_VERIFY:
        if (c.option("--remove")) req.flags |= KV_CTL_F_REMOVE;
        break;
    default:
        break;
    }
    return req;
}

} // namespace kvctl
