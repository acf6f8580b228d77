// SPDX-License-Identifier: MIT
//
// kvpoold's config parser (daemon/config.h): the documented example, the
// defaults, and one rejected case per key and per kind of mistake, each
// checked for the file:line:column, the key path and the words that tell a
// person what to write instead.
#include "config.h"
#include "runtime_pools.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <regex>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace kvtest {
namespace {

using namespace kv::daemon;

constexpr const char *kExample = R"(# the example from the design notes
[daemon]
control_socket = "/run/kvpool/control"
shm_dir = "/dev/shm/kvpool"
hugepage_dir = "/dev/hugepages/kvpool"
state_dir = "/var/lib/kvpool"
admin_group = "kvpool"
metrics = "tcp:127.0.0.1:9464"
reap_interval_ms = 200
evict_interval_ms = 100
log_level = "info"

[[pool]]
name = "default"
size = "1G"
hugepages = "prefer"
numa_node = "local"
eviction = "clock"
group = "kvpool"
mode = "0660"
prefault = true
high_watermark = 0.95
low_watermark = 0.85
snapshot_dir = "/var/lib/kvpool"
persist_on_stop = true
restore_on_start = true
)";

DaemonConfig parse_ok(const std::string &text) {
    auto c = parse_config(text, "test.toml");
    EXPECT_TRUE(c.has_value()) << c.error();
    return c.value_or(DaemonConfig{});
}

std::string parse_err(const std::string &text) {
    auto c = parse_config(text, "test.toml");
    EXPECT_FALSE(c.has_value()) << "accepted:\n" << text;
    return c.has_value() ? std::string() : c.error();
}

// A valid pool with one more line; the line must not repeat name or size.
std::string pool_with(const std::string &line) {
    return "[[pool]]\nname = \"p\"\nsize = \"1G\"\n" + line + "\n";
}

TEST(Config, FullExample) {
    const DaemonConfig c = parse_ok(kExample);
    EXPECT_EQ(c.control_socket, "/run/kvpool/control");
    EXPECT_EQ(c.shm_dir, "/dev/shm/kvpool");
    EXPECT_EQ(c.hugepage_dir, "/dev/hugepages/kvpool");
    EXPECT_EQ(c.state_dir, "/var/lib/kvpool");
    EXPECT_EQ(c.admin_group, "kvpool");
    EXPECT_EQ(c.metrics, "tcp:127.0.0.1:9464");
    EXPECT_EQ(c.reap_interval_ms, 200u);
    EXPECT_EQ(c.evict_interval_ms, 100u);
    EXPECT_EQ(c.log_level, LogLevel::Info);
    ASSERT_EQ(c.pools.size(), 1u);
    const PoolConfig &p = c.pools[0];
    EXPECT_EQ(p.name, "default");
    EXPECT_EQ(p.size, 1ULL << 30);
    EXPECT_EQ(p.hugepages, HugepageMode::Prefer);
    EXPECT_EQ(p.numa_node, kNumaLocal);
    EXPECT_EQ(p.eviction, "clock");
    EXPECT_EQ(p.group, "kvpool");
    EXPECT_EQ(p.mode, 0660u);
    EXPECT_TRUE(p.prefault);
    EXPECT_DOUBLE_EQ(p.high_watermark, 0.95);
    EXPECT_DOUBLE_EQ(p.low_watermark, 0.85);
    EXPECT_EQ(p.slab_size, 0u);
    EXPECT_EQ(p.avg_block_size, 0u);
    EXPECT_EQ(p.max_clients, 0u);
    EXPECT_EQ(p.max_entries, 0u);
    EXPECT_EQ(p.snapshot_dir, "/var/lib/kvpool");
    EXPECT_TRUE(p.persist_on_stop);
    EXPECT_TRUE(p.restore_on_start);
}

TEST(Config, EmptyFileGivesDefaults) {
    const DaemonConfig d;
    for (const char *text : {"", "# nothing\n", "[daemon]\n"}) {
        const DaemonConfig c = parse_ok(text);
        EXPECT_EQ(c.control_socket, d.control_socket);
        EXPECT_EQ(c.control_socket, "/run/kvpool/control");
        EXPECT_EQ(c.shm_dir, "/dev/shm/kvpool");
        EXPECT_EQ(c.hugepage_dir, "/dev/hugepages/kvpool");
        EXPECT_EQ(c.state_dir, "/var/lib/kvpool");
        EXPECT_EQ(c.admin_group, "kvpool");
        EXPECT_EQ(c.metrics, "");
        EXPECT_EQ(c.reap_interval_ms, 200u);
        EXPECT_EQ(c.evict_interval_ms, 100u);
        EXPECT_EQ(c.watchdog_divisor, 2u);
        EXPECT_EQ(c.log_level, LogLevel::Info);
        EXPECT_TRUE(c.pools.empty());
    }
    EXPECT_TRUE(parse_ok("pool = []\n").pools.empty());
}

TEST(Config, PoolDefaults) {
    const DaemonConfig c = parse_ok("[[pool]]\nname = \"a\"\nsize = \"16M\"\n");
    ASSERT_EQ(c.pools.size(), 1u);
    const PoolConfig &p = c.pools[0];
    EXPECT_EQ(p.name, "a");
    EXPECT_EQ(p.size, 16ULL << 20);
    EXPECT_EQ(p.hugepages, HugepageMode::Prefer);
    EXPECT_EQ(p.numa_node, kNumaNone);
    EXPECT_EQ(p.eviction, "prefix");
    EXPECT_EQ(p.group, "");
    EXPECT_EQ(p.mode, 0660u);
    EXPECT_TRUE(p.prefault);
    EXPECT_DOUBLE_EQ(p.high_watermark, 0.95);
    EXPECT_DOUBLE_EQ(p.low_watermark, 0.85);
    EXPECT_EQ(p.slab_size, 0u);
    EXPECT_EQ(p.avg_block_size, 0u);
    EXPECT_EQ(p.max_clients, 0u);
    EXPECT_EQ(p.snapshot_dir, "/var/lib/kvpool");
    EXPECT_FALSE(p.persist_on_stop);
    EXPECT_FALSE(p.restore_on_start);
}

TEST(Config, SnapshotDirDefaultsToStateDirWhereverDaemonIs) {
    // [daemon] after the pools still sets their default.
    const DaemonConfig c = parse_ok("[[pool]]\nname = \"a\"\nsize = \"1G\"\n"
                                    "[[pool]]\nname = \"b\"\nsize = \"1G\"\n"
                                    "snapshot_dir = \"/srv/snap\"\n"
                                    "[daemon]\nstate_dir = \"/srv/kv\"\n");
    ASSERT_EQ(c.pools.size(), 2u);
    EXPECT_EQ(c.pools[0].snapshot_dir, "/srv/kv");
    EXPECT_EQ(c.pools[1].snapshot_dir, "/srv/snap");
}

TEST(Config, OtherAcceptedForms) {
    const DaemonConfig c = parse_ok(R"([daemon]
metrics = "unix:/run/kvpool/metrics"
log_level = "debug"
reap_interval_ms = 10
evict_interval_ms = 10000

[[pool]]
name = "A-b_c.9"
size = 1073741824
hugepages = "require"
numa_node = 3
mode = 0o640
high_watermark = 1
low_watermark = 0.5
slab_size = "1M"
avg_block_size = "1M"
max_clients = 4095
group = ""

[[pool]]
name = "never"
size = "16 GiB"
hugepages = "never"
numa_node = "none"
mode = "0o600"
prefault = false
max_clients = 2
group = "render$"
)");
    EXPECT_EQ(c.metrics, "unix:/run/kvpool/metrics");
    EXPECT_EQ(c.log_level, LogLevel::Debug);
    EXPECT_EQ(c.reap_interval_ms, 10u);
    EXPECT_EQ(c.evict_interval_ms, 10000u);
    ASSERT_EQ(c.pools.size(), 2u);
    EXPECT_EQ(c.pools[0].name, "A-b_c.9");
    EXPECT_EQ(c.pools[0].size, 1ULL << 30);
    EXPECT_EQ(c.pools[0].hugepages, HugepageMode::Require);
    EXPECT_EQ(c.pools[0].numa_node, 3);
    EXPECT_EQ(c.pools[0].mode, 0640u);
    EXPECT_DOUBLE_EQ(c.pools[0].high_watermark, 1.0);
    EXPECT_DOUBLE_EQ(c.pools[0].low_watermark, 0.5);
    EXPECT_EQ(c.pools[0].slab_size, 1ULL << 20);
    EXPECT_EQ(c.pools[0].avg_block_size, 1ULL << 20);
    EXPECT_EQ(c.pools[0].max_clients, 4095u);
    EXPECT_EQ(c.pools[0].group, "");
    EXPECT_EQ(c.pools[1].size, 16ULL << 30);
    EXPECT_EQ(c.pools[1].hugepages, HugepageMode::Never);
    EXPECT_EQ(c.pools[1].numa_node, kNumaNone);
    EXPECT_EQ(c.pools[1].mode, 0600u);
    EXPECT_FALSE(c.pools[1].prefault);
    EXPECT_EQ(c.pools[1].max_clients, 2u);
    EXPECT_EQ(c.pools[1].group, "render$");
    EXPECT_EQ(static_cast<uint32_t>(c.pools[1].hugepages), 0u); // KV_HUGEPAGES_NEVER

    for (const char *lvl : {"error", "warning", "notice", "info", "debug"}) {
        const DaemonConfig l = parse_ok("[daemon]\nlog_level = \"" + std::string(lvl) + "\"\n");
        EXPECT_EQ(to_string(l.log_level), lvl);
    }
    EXPECT_EQ(static_cast<int>(parse_ok("[daemon]\nlog_level = \"warning\"\n").log_level), 4);
}

// Sizes with a fraction are rounded down to whole bytes (units.h), in
// every size key.
TEST(Config, SizesTakeFractions) {
    const DaemonConfig c = parse_ok("[[pool]]\nname = \"a\"\nsize = \"1.5G\"\n"
                                    "avg_block_size = \"4.5K\"\n");
    ASSERT_EQ(c.pools.size(), 1u);
    EXPECT_EQ(c.pools[0].size, 1610612736u);
    EXPECT_EQ(c.pools[0].avg_block_size, 4608u);
    // A fraction that lands off a power of two is refused by the slab check.
    const std::string e = parse_err(pool_with("slab_size = \"1.5M\""));
    for (const char *want : {"pool[0].slab_size", "1.5 MiB (1572864 bytes)", "power of two"})
        EXPECT_NE(e.find(want), std::string::npos) << want << "\n" << e;
}

TEST(Config, InlineArrayOfTables) {
    const DaemonConfig c =
        parse_ok("pool = [{ name = \"a\", size = \"1G\" }, { name = \"b\", size = \"2G\" }]\n");
    ASSERT_EQ(c.pools.size(), 2u);
    EXPECT_EQ(c.pools[1].size, 2ULL << 30);
}

struct BadCase {
    const char *what;
    std::string text;
    std::vector<std::string> fragments; // each must appear in the message
};

// Every rejected config, one per key and kind of mistake.
std::vector<BadCase> bad_cases() {
    const std::string d = "[daemon]\n";
    return {
        // ---- [daemon] -----------------------------------------------------
        {"socket type",
         d + "control_socket = 5",
         {"daemon.control_socket", "absolute path", "got integer 5"}},
        {"socket relative",
         d + "control_socket = \"run/ctl\"",
         {"daemon.control_socket", "absolute path", "got string \"run/ctl\""}},
        {"socket too long",
         d + "control_socket = \"/" + std::string(120, 'x') + "\"",
         {"daemon.control_socket", "121 bytes is too long", "at most 107"}},
        {"shm_dir type",
         d + "shm_dir = true",
         {"daemon.shm_dir", "absolute path", "got boolean true"}},
        {"shm_dir relative",
         d + "shm_dir = \"dev/shm\"",
         {"daemon.shm_dir", "got string \"dev/shm\""}},
        {"shm_dir empty",
         d + "shm_dir = \"\"",
         {"daemon.shm_dir", "absolute path", "got string \"\""}},
        {"hugepage_dir type", d + "hugepage_dir = []", {"daemon.hugepage_dir", "got an array"}},
        {"hugepage_dir relative",
         d + "hugepage_dir = \"hugepages\"",
         {"daemon.hugepage_dir", "absolute path", "\"hugepages\""}},
        {"state_dir type", d + "state_dir = 1.5", {"daemon.state_dir", "got float 1.5"}},
        {"state_dir relative", d + "state_dir = \"./state\"", {"daemon.state_dir", "\"./state\""}},
        {"admin_group type",
         d + "admin_group = 1",
         {"daemon.admin_group", "group name", "got integer 1"}},
        {"admin_group empty",
         d + "admin_group = \"\"",
         {"daemon.admin_group", "group name", "got string \"\""}},
        {"admin_group bad", d + "admin_group = \"kv pool\"", {"daemon.admin_group", "\"kv pool\""}},
        {"metrics type",
         d + "metrics = 9464",
         {"daemon.metrics", "expected a string", "got integer 9464"}},
        {"metrics any addr",
         d + "metrics = \"tcp:0.0.0.0:9464\"",
         {"daemon.metrics", "loopback", "127.0.0.0/8", "got \"0.0.0.0\""}},
        {"metrics lan addr",
         d + "metrics = \"tcp:10.1.2.3:9464\"",
         {"daemon.metrics", "loopback", "\"10.1.2.3\""}},
        {"metrics v6 any",
         d + "metrics = \"tcp:[::]:9464\"",
         {"daemon.metrics", "loopback", "got \"::\""}},
        {"metrics hostname",
         d + "metrics = \"tcp:localhost:9464\"",
         {"daemon.metrics", "loopback", "\"localhost\""}},
        {"metrics no port",
         d + "metrics = \"tcp:127.0.0.1\"",
         {"daemon.metrics", "tcp:ADDRESS:PORT"}},
        {"metrics port 0",
         d + "metrics = \"tcp:127.0.0.1:0\"",
         {"daemon.metrics", "port \"0\"", "1 to 65535"}},
        {"metrics port big",
         d + "metrics = \"tcp:127.0.0.1:70000\"",
         {"daemon.metrics", "port \"70000\""}},
        {"metrics v6 bare", d + "metrics = \"tcp:::1:9464\"", {"daemon.metrics", "in brackets"}},
        {"metrics scheme",
         d + "metrics = \"http://127.0.0.1:9464\"",
         {"daemon.metrics", "metrics \"http://127.0.0.1:9464\"", "unix:/absolute/path"}},
        {"metrics unix relative",
         d + "metrics = \"unix:run/m\"",
         {"daemon.metrics", "absolute socket path"}},
        {"reap type",
         d + "reap_interval_ms = \"200\"",
         {"daemon.reap_interval_ms", "integer from 10 to 1000", "got string \"200\""}},
        {"reap low",
         d + "reap_interval_ms = 5",
         {"daemon.reap_interval_ms", "10 to 1000", "got integer 5"}},
        {"reap high",
         d + "reap_interval_ms = 1001",
         {"daemon.reap_interval_ms", "got integer 1001"}},
        {"evict type",
         d + "evict_interval_ms = 0.1",
         {"daemon.evict_interval_ms", "got float 0.1"}},
        {"evict high",
         d + "evict_interval_ms = 10001",
         {"daemon.evict_interval_ms", "10 to 10000", "got integer 10001"}},
        {"log_level type",
         d + "log_level = 6",
         {"daemon.log_level", "one of: error, warning, notice, info, debug", "got integer 6"}},
        {"log_level value",
         d + "log_level = \"verbose\"",
         {"daemon.log_level", "got string \"verbose\""}},
        {"daemon not table", "daemon = 5", {"daemon: expected a table", "got integer 5"}},
        // ---- [[pool]] -----------------------------------------------------
        {"name missing", "[[pool]]\nsize = \"1G\"\n", {"pool[0]: missing required key \"name\""}},
        {"name type",
         "[[pool]]\nname = 5\nsize = \"1G\"",
         {"pool[0].name", "expected a string", "got integer 5"}},
        {"name empty",
         "[[pool]]\nname = \"\"\nsize = \"1G\"",
         {"pool[0].name", "1 to 63", "got string \"\""}},
        {"name slash", "[[pool]]\nname = \"a/b\"\nsize = \"1G\"", {"pool[0].name", "\"a/b\""}},
        {"name dot",
         "[[pool]]\nname = \".\"\nsize = \"1G\"",
         {"pool[0].name", "not \".\"", "got string \".\""}},
        {"name dotdot",
         "[[pool]]\nname = \"..\"\nsize = \"1G\"",
         {"pool[0].name", "got string \"..\""}},
        {"name long",
         "[[pool]]\nname = \"" + std::string(64, 'n') + "\"\nsize = \"1G\"",
         {"pool[0].name", "1 to 63"}},
        {"size missing", "[[pool]]\nname = \"a\"\n", {"pool[0]: missing required key \"size\""}},
        {"size type",
         "[[pool]]\nname = \"a\"\nsize = 1.5",
         {"pool[0].size", "\"512M\"", "got float 1.5"}},
        {"size negative", "[[pool]]\nname = \"a\"\nsize = -1", {"pool[0].size", "got integer -1"}},
        {"size garbage",
         "[[pool]]\nname = \"a\"\nsize = \"12Q\"",
         {"pool[0].size", "size \"12Q\": expected a number with an optional K, M, G or T suffix"}},
        {"size fraction garbage",
         "[[pool]]\nname = \"a\"\nsize = \"1,5G\"",
         {"pool[0].size", "size \"1,5G\": expected a number with an optional K, M, G or T suffix"}},
        {"size fraction small",
         "[[pool]]\nname = \"a\"\nsize = \"15.9M\"",
         {"pool[0].size", "15.9 MiB (16672358 bytes) is too small", "at least 16.0 MiB"}},
        {"size small",
         "[[pool]]\nname = \"a\"\nsize = \"8M\"",
         {"pool[0].size", "8.0 MiB (8388608 bytes) is too small", "at least 16.0 MiB"}},
        {"hugepages type",
         pool_with("hugepages = true"),
         {"pool[0].hugepages", "one of: never, prefer, require", "got boolean true"}},
        {"hugepages value",
         pool_with("hugepages = \"always\""),
         {"pool[0].hugepages", "got string \"always\""}},
        {"numa type",
         pool_with("numa_node = 1.0"),
         {"pool[0].numa_node", "\"local\" or \"none\"", "got float 1.0"}},
        {"numa negative",
         pool_with("numa_node = -1"),
         {"pool[0].numa_node", "0 to 1023", "got integer -1"}},
        {"numa big", pool_with("numa_node = 1024"), {"pool[0].numa_node", "got integer 1024"}},
        {"numa word",
         pool_with("numa_node = \"remote\""),
         {"pool[0].numa_node", "got string \"remote\""}},
        {"eviction type",
         pool_with("eviction = 1"),
         {"pool[0].eviction", "expected a string", "got integer 1"}},
        {"eviction value",
         pool_with("eviction = \"random\""),
         {"pool[0].eviction", "unknown eviction policy \"random\"; known policies: clock, lru, "
                              "lfu, fifo, priority, prefix"}},
        {"group type", pool_with("group = 0"), {"pool[0].group", "group name", "got integer 0"}},
        {"group dash", pool_with("group = \"-x\""), {"pool[0].group", "got string \"-x\""}},
        {"group space", pool_with("group = \"a b\""), {"pool[0].group", "got string \"a b\""}},
        {"mode decimal",
         pool_with("mode = 660"),
         {"pool[0].mode", "got integer 660", "decimal", "quote it: mode = \"660\""}},
        {"mode type", pool_with("mode = true"), {"pool[0].mode", "octal mode", "got boolean true"}},
        {"mode digits",
         pool_with("mode = \"0999\""),
         {"pool[0].mode", "mode \"0999\"", "octal digits"}},
        {"mode setuid", pool_with("mode = \"4660\""), {"pool[0].mode", "setuid", "at most 0777"}},
        {"mode setuid octal",
         pool_with("mode = 0o4660"),
         {"pool[0].mode", "0 to 0777", "got integer 2480"}},
        {"mode too big", pool_with("mode = \"17777\""), {"pool[0].mode", "at most 07777"}},
        {"prefault type",
         pool_with("prefault = \"yes\""),
         {"pool[0].prefault: expected a boolean, got string \"yes\""}},
        {"high type",
         pool_with("high_watermark = \"0.9\""),
         {"pool[0].high_watermark", "0 < x <= 1", "got string \"0.9\""}},
        {"high big",
         pool_with("high_watermark = 1.5"),
         {"pool[0].high_watermark", "got float 1.5"}},
        {"high zero", pool_with("high_watermark = 0"), {"pool[0].high_watermark", "got integer 0"}},
        {"low negative",
         pool_with("low_watermark = -0.1"),
         {"pool[0].low_watermark", "got float -0.1"}},
        {"low nan", pool_with("low_watermark = nan"), {"pool[0].low_watermark", "0 < x <= 1"}},
        {"low equals high",
         pool_with("high_watermark = 0.9\nlow_watermark = 0.9"),
         {"pool[0].low_watermark", "0.9 must be below high_watermark (0.9)"}},
        {"low above default high",
         pool_with("low_watermark = 0.99"),
         {"pool[0].low_watermark", "0.99 must be below high_watermark (0.95)"}},
        {"high below default low",
         pool_with("high_watermark = 0.5"),
         {"pool[0].low_watermark", "0.85 must be below high_watermark (0.5)"}},
        {"slab type", pool_with("slab_size = true"), {"pool[0].slab_size", "got boolean true"}},
        {"slab not pow2",
         pool_with("slab_size = \"3M\""),
         {"pool[0].slab_size", "3.0 MiB (3145728 bytes)", "power of two from 64.0 KiB to 1.0 GiB"}},
        {"slab small", pool_with("slab_size = \"32K\""), {"pool[0].slab_size", "32.0 KiB"}},
        {"slab big", pool_with("slab_size = \"2G\""), {"pool[0].slab_size", "2.0 GiB"}},
        {"slab garbage", pool_with("slab_size = \"4MB!\""), {"pool[0].slab_size", "size \"4MB!\""}},
        {"avg type",
         pool_with("avg_block_size = 1.0"),
         {"pool[0].avg_block_size", "got float 1.0"}},
        {"avg small",
         pool_with("avg_block_size = \"1K\""),
         {"pool[0].avg_block_size", "1.0 KiB (1024 bytes)", "4.0 KiB to the slab size (4.0 MiB)"}},
        {"avg above slab",
         pool_with("slab_size = \"64K\"\navg_block_size = \"128K\""),
         {"pool[0].avg_block_size", "to the slab size (64.0 KiB)"}},
        {"max_clients type",
         pool_with("max_clients = \"64\""),
         {"pool[0].max_clients", "integer from 2 to 4095", "got string \"64\""}},
        {"max_clients zero",
         pool_with("max_clients = 0"),
         {"pool[0].max_clients", "got integer 0"}},
        {"max_clients one (kvpoold takes a slot itself)",
         pool_with("max_clients = 1"),
         {"pool[0].max_clients", "integer from 2 to 4095", "got integer 1"}},
        {"max_clients big",
         pool_with("max_clients = 4096"),
         {"pool[0].max_clients", "got integer 4096"}},
        {"snapshot_dir type",
         pool_with("snapshot_dir = 1"),
         {"pool[0].snapshot_dir", "got integer 1"}},
        {"snapshot_dir relative",
         pool_with("snapshot_dir = \"snapshots\""),
         {"pool[0].snapshot_dir", "absolute path", "got string \"snapshots\""}},
        {"persist type",
         pool_with("persist_on_stop = 1"),
         {"pool[0].persist_on_stop", "expected a boolean", "got integer 1"}},
        {"restore type",
         pool_with("restore_on_start = \"true\""),
         {"pool[0].restore_on_start", "expected a boolean", "got string \"true\""}},
        {"second pool",
         pool_with("") + "[[pool]]\nname = \"q\"\nsize = \"1G\"\nprefault = 0\n",
         {"pool[1].prefault", "got integer 0"}},
        {"pool not array", "pool = 5", {"pool: expected an array of tables", "got integer 5"}},
        {"pool single table",
         "[pool]\nname = \"a\"\nsize = \"1G\"\n",
         {"pool: expected an array of tables (write [[pool]], not [pool])", "got a table"}},
        {"pool element", "pool = [1]", {"pool[0]: expected a table", "got integer 1"}},
        {"duplicate name",
         pool_with("") + pool_with(""),
         {"pool[1].name", "\"p\" is already the name of pool[0]"}},
        // ---- unknown keys -------------------------------------------------
        {"unknown top", "foo = 1", {"unknown key \"foo\" at top level; known keys: daemon, pool"}},
        {"unknown top table",
         "[deamon]\nshm_dir = \"/x\"",
         {"unknown key \"deamon\" at top level (did you mean \"daemon\"?)"}},
        {"unknown daemon",
         d + "control_sokcet = \"/x\"",
         {"unknown key \"control_sokcet\" in [daemon]", "known keys: control_socket, shm_dir"}},
        {"watchdog not a key",
         d + "watchdog_divisor = 3",
         {"unknown key \"watchdog_divisor\" in [daemon]"}},
        {"unknown pool",
         "[[pool]]\nname = \"a\"\nsise = \"1G\"",
         {"unknown key \"sise\" in pool[0] (did you mean \"size\"?); known keys: name, size, "
          "hugepages"}},
        {"unknown second pool",
         pool_with("") + "[[pool]]\nname = \"q\"\nsize = \"1G\"\nhuge = \"never\"\n",
         {"unknown key \"huge\" in pool[1]; known keys:"}},
        // ---- syntax -------------------------------------------------------
        {"syntax table", "[daemon\n", {"TOML syntax error"}},
        {"syntax value", d + "shm_dir = /dev/shm\n", {"test.toml:2:", "TOML syntax error"}},
        {"syntax duplicate key",
         d + "shm_dir = \"/a\"\nshm_dir = \"/b\"\n",
         {"test.toml:3:", "TOML syntax error"}},
    };
}

TEST(Config, RejectsWithUsefulMessages) {
    // file:line:column: first, then the message.
    const std::regex located(R"(^test\.toml:[0-9]+:[0-9]+: .+)");
    for (const BadCase &c : bad_cases()) {
        SCOPED_TRACE(c.what);
        const std::string e = parse_err(c.text);
        EXPECT_TRUE(std::regex_match(e, located)) << e;
        for (const std::string &f : c.fragments)
            EXPECT_NE(e.find(f), std::string::npos) << "missing [" << f << "] in: " << e;
    }
}

TEST(Config, LineAndColumnPointAtTheValue) {
    const std::string e = parse_err("[[pool]]\nname = \"a\"\nsize = \"1G\"\nprefault = \"yes\"\n");
    EXPECT_EQ(e, "test.toml:4:12: pool[0].prefault: expected a boolean, got string \"yes\"");
    const std::string k = parse_err("\n\n[daemon]\n  sokcet = 1\n");
    EXPECT_EQ(k.rfind("test.toml:4:3: unknown key \"sokcet\" in [daemon]", 0), 0u) << k;
}

TEST(Config, OriginNamesTheFile) {
    auto c = parse_config("foo = 1", "/etc/kvpool/kvpoold.toml");
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().rfind("/etc/kvpool/kvpoold.toml:1:1: ", 0), 0u) << c.error();
}

TEST(Config, Describe) {
    const std::string s = describe(parse_ok(kExample));
    EXPECT_EQ(s.find('\n'), std::string::npos);
    EXPECT_NE(s.find("pools=1"), std::string::npos) << s;
    EXPECT_NE(s.find("[default 1.0 GiB hugepages=prefer numa=local group=kvpool mode=0660]"),
              std::string::npos)
        << s;
    EXPECT_NE(describe(DaemonConfig{}).find("metrics=off"), std::string::npos);
}

TEST(Config, ParseMetrics) {
    auto off = parse_metrics("");
    ASSERT_TRUE(off.has_value());
    EXPECT_EQ(off->kind, MetricsEndpoint::Kind::Off);

    auto v4 = parse_metrics("tcp:127.0.0.1:9464");
    ASSERT_TRUE(v4.has_value()) << v4.error();
    EXPECT_EQ(v4->kind, MetricsEndpoint::Kind::Tcp);
    EXPECT_EQ(v4->host, "127.0.0.1");
    EXPECT_EQ(v4->port, 9464);

    auto v4b = parse_metrics("tcp:127.10.20.30:1");
    ASSERT_TRUE(v4b.has_value()) << v4b.error();
    EXPECT_EQ(v4b->port, 1);

    auto v6 = parse_metrics("tcp:[::1]:65535");
    ASSERT_TRUE(v6.has_value()) << v6.error();
    EXPECT_EQ(v6->host, "::1");
    EXPECT_EQ(v6->port, 65535);

    auto ux = parse_metrics("unix:/run/kvpool/metrics");
    ASSERT_TRUE(ux.has_value()) << ux.error();
    EXPECT_EQ(ux->kind, MetricsEndpoint::Kind::Unix);
    EXPECT_EQ(ux->path, "/run/kvpool/metrics");

    for (const char *bad :
         {"tcp:128.0.0.1:1", "tcp:[::2]:1", "tcp:[::1]", "tcp:[::1:9464", "tcp:127.0.0.1:-1",
          "tcp:127.0.0.1:", "tcp:127.1:9464", "unix:", "udp:x"})
        EXPECT_FALSE(parse_metrics(bad).has_value()) << bad;
}

class LoadConfig : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/kvpool-config-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string write(const std::string &name, const std::string &text) {
        const std::string p = dir_ + "/" + name;
        std::ofstream(p) << text;
        return p;
    }
    std::string dir_;
};

TEST_F(LoadConfig, ReadsFile) {
    const std::string p = write("kvpoold.toml", kExample);
    auto c = load_config(p);
    ASSERT_TRUE(c.has_value()) << c.error();
    ASSERT_EQ(c->pools.size(), 1u);
    EXPECT_EQ(c->pools[0].name, "default");
}

TEST_F(LoadConfig, ErrorsNameThePath) {
    const std::string p = write("bad.toml", "[daemon]\nlog_level = \"loud\"\n");
    auto c = load_config(p);
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().rfind(p + ":2:13: daemon.log_level", 0), 0u) << c.error();
}

TEST_F(LoadConfig, MissingFile) {
    const std::string p = dir_ + "/nope.toml";
    auto c = load_config(p);
    ASSERT_FALSE(c.has_value());
    EXPECT_NE(c.error().find("\"" + p + "\""), std::string::npos) << c.error();
    EXPECT_NE(c.error().find("No such file or directory"), std::string::npos) << c.error();
}

TEST_F(LoadConfig, Directory) {
    auto c = load_config(dir_);
    ASSERT_FALSE(c.has_value());
    EXPECT_NE(c.error().find(dir_), std::string::npos) << c.error();
    EXPECT_NE(c.error().find("Is a directory"), std::string::npos) << c.error();
}

TEST_F(LoadConfig, TooLarge) {
    const std::string p = write("big.toml", std::string(2 << 20, '#'));
    auto c = load_config(p);
    ASSERT_FALSE(c.has_value());
    EXPECT_NE(c.error().find("larger than 1.0 MiB"), std::string::npos) << c.error();
}

} // namespace
} // namespace kvtest

// The runtime pools' file is written in the config's [[pool]] syntax and
// read back by the config parser: every setting survives the round trip.
TEST(RuntimePools, TomlRoundTrip) {
    kv::daemon::PoolConfig a;
    a.name = "beta.1";
    a.size = 48ULL << 20;
    a.hugepages = kv::daemon::HugepageMode::Never;
    a.numa_node = kv::daemon::kNumaLocal;
    a.eviction = "lfu";
    a.group = "kv-pool_grp.1";
    a.mode = 0640;
    a.prefault = false;
    a.high_watermark = 0.9;
    a.low_watermark = 0.7;
    a.slab_size = 1ULL << 20;
    a.avg_block_size = 64ULL << 10;
    a.max_clients = 8;
    a.max_entries = 5000;
    a.snapshot_dir = "/var/lib/kvpool";
    a.persist_on_stop = true;
    a.restore_on_start = true;
    kv::daemon::PoolConfig b = a;
    b.name = "gamma";
    b.numa_node = 0;
    b.high_watermark = 1;
    b.group.clear();
    b.slab_size = b.avg_block_size = 0;
    b.max_clients = 0;
    b.persist_on_stop = b.restore_on_start = false;
    for (const auto &pc : {a, b}) {
        auto cfg = kv::daemon::parse_config(kv::daemon::pool_toml(pc), "runtime-pools.toml");
        ASSERT_TRUE(cfg) << cfg.error() << "\n" << kv::daemon::pool_toml(pc);
        ASSERT_EQ(cfg->pools.size(), 1u);
        const auto &r = cfg->pools[0];
        EXPECT_EQ(r.name, pc.name);
        EXPECT_EQ(r.size, pc.size);
        EXPECT_EQ(r.hugepages, pc.hugepages);
        EXPECT_EQ(r.numa_node, pc.numa_node);
        EXPECT_EQ(r.eviction, pc.eviction);
        EXPECT_EQ(r.group, pc.group);
        EXPECT_EQ(r.mode, pc.mode);
        EXPECT_EQ(r.prefault, pc.prefault);
        EXPECT_EQ(r.high_watermark, pc.high_watermark);
        EXPECT_EQ(r.low_watermark, pc.low_watermark);
        EXPECT_EQ(r.slab_size, pc.slab_size);
        EXPECT_EQ(r.avg_block_size, pc.avg_block_size);
        EXPECT_EQ(r.max_clients, pc.max_clients);
        EXPECT_EQ(r.max_entries, pc.max_entries);
        EXPECT_EQ(r.snapshot_dir, pc.snapshot_dir);
        EXPECT_EQ(r.persist_on_stop, pc.persist_on_stop);
        EXPECT_EQ(r.restore_on_start, pc.restore_on_start);
    }
}

TEST(Config, MaxEntries) {
    auto ok = kv::daemon::parse_config(
        "[[pool]]\nname = \"a\"\nsize = \"16M\"\nmax_entries = 100\n", "t.toml");
    ASSERT_TRUE(ok) << ok.error();
    EXPECT_EQ(ok->pools[0].max_entries, 100u);
    auto c = kv::daemon::parse_config("[[pool]]\nname = \"a\"\nsize = \"16M\"\nmax_entries = 10\n",
                                      "t.toml");
    ASSERT_FALSE(c);
    EXPECT_NE(c.error().find("max_entries"), std::string::npos) << c.error();
    EXPECT_NE(c.error().find("10"), std::string::npos) << c.error();
}

TEST(Config, FeedSlots) {
    auto dflt = kv::daemon::parse_config("[[pool]]\nname = \"a\"\nsize = \"16M\"\n", "t.toml");
    ASSERT_TRUE(dflt) << dflt.error();
    EXPECT_EQ(dflt->pools[0].feed_slots, 4096u);
    for (const char *ok : {"0", "64", "1048576"}) {
        auto c = kv::daemon::parse_config(
            std::string("[[pool]]\nname = \"a\"\nsize = \"16M\"\nfeed_slots = ") + ok + "\n",
            "t.toml");
        ASSERT_TRUE(c) << ok << ": " << c.error();
        EXPECT_EQ(c->pools[0].feed_slots, uint32_t(std::stoul(ok)));
    }
    for (const char *bad : {"32", "100", "2097152", "-1"}) {
        auto c = kv::daemon::parse_config(
            std::string("[[pool]]\nname = \"a\"\nsize = \"16M\"\nfeed_slots = ") + bad + "\n",
            "t.toml");
        ASSERT_FALSE(c) << bad;
        EXPECT_NE(c.error().find("feed_slots"), std::string::npos) << c.error();
    }
}

namespace kvtest {
namespace {

using namespace kv::daemon;

TEST(Config, Remote) {
    const DaemonConfig c = parse_ok(pool_with(R"([pool.remote]
seeds = ["127.0.0.1:7000", "[::1]:7001", "redis-0.example:6379"]
key_prefix = "kv:"
write = "none"
namespaces = ["m1", "m2"]
bandwidth = "100M"
ttl_s = 3600
max_connections = 4
timeout_ms = 500
queue_bytes = "64M"
medium = "REDIS-EU")"));
    ASSERT_EQ(c.pools.size(), 1u);
    const RemoteConfig &r = c.pools[0].remote;
    EXPECT_TRUE(r.enabled);
    EXPECT_EQ(r.seeds.size(), 3u);
    EXPECT_EQ(r.key_prefix, "kv:");
    EXPECT_EQ(r.write, WritePolicy::None);
    EXPECT_EQ(r.namespaces, (std::vector<std::string>{"m1", "m2"}));
    EXPECT_EQ(r.bandwidth, 100ULL << 20);
    EXPECT_EQ(r.ttl_s, 3600u);
    EXPECT_EQ(r.max_connections, 4u);
    EXPECT_EQ(r.timeout_ms, 500u);
    EXPECT_EQ(r.queue_bytes, 64ULL << 20);
    EXPECT_EQ(r.medium, "REDIS-EU");

    const DaemonConfig d = parse_ok(pool_with("[pool.remote]\nseeds = [\"h:1\"]"));
    EXPECT_EQ(d.pools[0].remote.write, WritePolicy::WriteBehind);
    EXPECT_FALSE(parse_ok(pool_with("")).pools[0].remote.enabled);
}

TEST(Config, RemoteRejects) {
    struct Case {
        const char *body, *words;
    };
    const Case cases[] = {
        {"key_prefix = \"x\"", "missing required key \"seeds\""},
        {"seeds = []", "pool[0].remote.seeds"},
        {"seeds = [\"nocolon\"]", "pool[0].remote.seeds[0]"},
        {"seeds = [\"h:70000\"]", "host:port"},
        {"seeds = [\"h:1\"]\nkey_prefix = \"{x}\"", "hash tag"},
        {"seeds = [\"h:1\"]\nwrite = \"always\"", "write-behind"},
        {"seeds = [\"h:1\"]\nbandwidth = 10", "64K"},
        {"seeds = [\"h:1\"]\nmax_connections = 0", "1 to 64"},
        {"seeds = [\"h:1\"]\ntimeout_ms = 1", "10 to 60000"},
        {"seeds = [\"h:1\"]\nqueue_bytes = \"1K\"", "1M to 64G"},
        {"seeds = [\"h:1\"]\nusername = \"u\"", "without a password"},
        {"seeds = [\"h:1\"]\npassword_file = \"rel\"", "absolute path"},
        {"seeds = [\"h:1\"]\npassword_file = \"/p\"\npassword_credential = \"c\"", "expected one"},
        {"seeds = [\"h:1\"]\npasword_file = \"/p\"", "did you mean \"password_file\""},
    };
    for (const Case &k : cases) {
        const std::string e = parse_err(pool_with(std::string("[pool.remote]\n") + k.body));
        EXPECT_NE(e.find(k.words), std::string::npos) << k.body << "\n -> " << e;
    }
}

TEST(Config, EncryptionEraseAudit) {
    const DaemonConfig c = parse_ok("[daemon]\naudit = false\naudit_rate = 5\n" +
                                    pool_with("secure_erase = true\n[pool.encryption]\n"
                                              "key = \"a-2\"\n"
                                              "[[pool.encryption.keys]]\nid = \"a-2\"\n"
                                              "credential = \"kvpool-a-2\"\n"
                                              "[[pool.encryption.keys]]\nid = \"a-1\"\n"
                                              "file = \"/etc/kvpool/a-1.key\"\n"));
    EXPECT_FALSE(c.audit);
    EXPECT_EQ(c.audit_rate, 5u);
    const PoolConfig &p = c.pools[0];
    EXPECT_TRUE(p.secure_erase);
    ASSERT_TRUE(p.encryption.enabled);
    EXPECT_EQ(p.encryption.key, "a-2");
    ASSERT_EQ(p.encryption.keys.size(), 2u);
    EXPECT_EQ(p.encryption.keys[0].credential, "kvpool-a-2");
    EXPECT_EQ(p.encryption.keys[1].file, "/etc/kvpool/a-1.key");

    const DaemonConfig d = parse_ok(pool_with(""));
    EXPECT_TRUE(d.audit);
    EXPECT_EQ(d.audit_rate, 100u);
    EXPECT_FALSE(d.pools[0].secure_erase);
    EXPECT_FALSE(d.pools[0].encryption.enabled);
}

TEST(Config, EncryptionRejects) {
    struct Case {
        const char *body, *words;
    };
    const Case cases[] = {
        {"key = \"k1\"", "missing required key \"keys\""},
        {"keys = []", "at least one"},
        {"[[pool.encryption.keys]]\nid = \"k1\"\nfile = \"/k1\"", "missing required key \"key\""},
        {"key = \"k2\"\n[[pool.encryption.keys]]\nid = \"k1\"\nfile = \"/k1\"",
         "\"k2\" is not the id of a configured key; configured: k1"},
        {"key = \"k1\"\n[[pool.encryption.keys]]\nid = \"k 1\"\nfile = \"/k1\"",
         "key id of 1 to 31"},
        {"key = \"k1\"\n[[pool.encryption.keys]]\nid = \"k1\"", "neither file nor credential"},
        {"key = \"k1\"\n[[pool.encryption.keys]]\nid = \"k1\"\nfile = \"/k\"\ncredential = \"c\"",
         "both file and credential"},
        {"key = \"k1\"\n[[pool.encryption.keys]]\nid = \"k1\"\nfile = \"rel\"", "absolute path"},
        {"key = \"k1\"\n[[pool.encryption.keys]]\nid = \"k1\"\ncredential = \"a/b\"",
         "credential name"},
        {"key = \"k1\"\n[[pool.encryption.keys]]\nid = \"k1\"\nfile = \"/a\"\n"
         "[[pool.encryption.keys]]\nid = \"k1\"\nfile = \"/b\"",
         "configured twice"},
        {"key = \"k1\"\nkeyz = 1\n[[pool.encryption.keys]]\nid = \"k1\"\nfile = \"/a\"",
         "pool[0].encryption"},
    };
    for (const Case &k : cases) {
        const std::string e = parse_err(pool_with(std::string("[pool.encryption]\n") + k.body));
        EXPECT_NE(e.find(k.words), std::string::npos) << k.body << "\n -> " << e;
    }
    EXPECT_NE(parse_err(pool_with("secure_erase = 1")).find("pool[0].secure_erase"),
              std::string::npos);
    EXPECT_NE(parse_err("[daemon]\naudit_rate = 0\n").find("daemon.audit_rate"), std::string::npos);
}

TEST_F(LoadConfig, RemotePasswordFileChecks) {
    RemoteConfig rc;
    EXPECT_EQ(read_remote_password(rc).value_or("x"), ""); // none configured
    rc.password_file = write("pw", "s3cret\n");
    ASSERT_EQ(chmod(rc.password_file.c_str(), 0640), 0);
    if (geteuid() == 0) {
        auto ok = read_remote_password(rc);
        ASSERT_TRUE(ok) << ok.error();
        EXPECT_EQ(*ok, "s3cret");
    }
    ASSERT_EQ(chmod(rc.password_file.c_str(), 0644), 0);
    auto world = read_remote_password(rc);
    ASSERT_FALSE(world);
    EXPECT_NE(world.error().find("mode 0644"), std::string::npos) << world.error();
    EXPECT_NE(world.error().find(rc.password_file), std::string::npos) << world.error();
    if (geteuid() == 0) {
        ASSERT_EQ(chmod(rc.password_file.c_str(), 0600), 0);
        ASSERT_EQ(chown(rc.password_file.c_str(), 65534, 0), 0);
        auto other = read_remote_password(rc);
        ASSERT_FALSE(other);
        EXPECT_NE(other.error().find("owned by uid 65534"), std::string::npos) << other.error();
    }
    rc.password_file = dir_ + "/absent";
    EXPECT_FALSE(read_remote_password(rc));
    rc.password_file.clear();
    rc.password_credential = "pw";
    ::setenv("CREDENTIALS_DIRECTORY", dir_.c_str(), 1);
    write("pw", "cred\n"); // credentials need no owner check: systemd's directory is private
    auto cred = read_remote_password(rc);
    ::unsetenv("CREDENTIALS_DIRECTORY");
    ASSERT_TRUE(cred) << cred.error();
    EXPECT_EQ(*cred, "cred");
}

} // namespace
} // namespace kvtest
