// SPDX-License-Identifier: MIT
//
// The KV-event encoder (daemon/kv_events.h) byte for byte against vLLM's
// msgspec shapes, and the [pool.events] config table.
#include "config.h"
#include "kv_events.h"

#include <gtest/gtest.h>
#include <msgpack.h>
#include <string>

namespace kv::daemon {
namespace {

// An unpacked payload, freed on scope exit.
struct Unpacked {
    msgpack_unpacked up;
    explicit Unpacked(const std::string &bytes) {
        msgpack_unpacked_init(&up);
        size_t off = 0;
        ok = msgpack_unpack_next(&up, bytes.data(), bytes.size(), &off) == MSGPACK_UNPACK_SUCCESS &&
             off == bytes.size();
    }
    ~Unpacked() { msgpack_unpacked_destroy(&up); }
    const msgpack_object &root() const { return up.data; }
    bool ok = false;
};

std::string str(const msgpack_object &o) {
    EXPECT_EQ(o.type, MSGPACK_OBJECT_STR);
    return o.type == MSGPACK_OBJECT_STR ? std::string(o.via.str.ptr, o.via.str.size) : "";
}

const msgpack_object *field(const msgpack_object &map, const std::string &key) {
    for (uint32_t i = 0; i < map.via.map.size; i++)
        if (str(map.via.map.ptr[i].key) == key) return &map.via.map.ptr[i].val;
    return nullptr;
}

FeedEvent stored(uint64_t hi, uint64_t lo, const kv_key *parent, std::vector<uint32_t> ids = {}) {
    FeedEvent e;
    e.kind = FeedKind::Stored;
    e.ns = 3;
    e.key = kv_key{lo, hi};
    if (parent) {
        e.has_parent = true;
        e.parent = *parent;
    }
    e.tokens = 4;
    e.token_ids = std::move(ids);
    return e;
}

FeedEvent removed(uint64_t hi, uint64_t lo) {
    FeedEvent e;
    e.kind = FeedKind::Removed;
    e.ns = 3;
    e.key = kv_key{lo, hi};
    return e;
}

EventEncoder encoder(EventEncoding enc, HashForm form) {
    EventEncoder e;
    e.encoding = enc;
    e.hash_form = form;
    e.block_size = [](uint32_t ns) { return ns == 3 ? 4u : 0u; };
    return e;
}

TEST(KvEventsEncoder, ArrayBatchMatchesVllmTaggedArrays) {
    const kv_key k1{0x1111, 0xa1}, k2{0x2222, 0xa2};
    const kv_key p0{0x0f0f, 0x0e};
    std::vector<FeedEvent> ev;
    FeedEvent clear;
    clear.kind = FeedKind::Cleared;
    ev.push_back(clear);
    ev.push_back(stored(k1.hi, k1.lo, &p0, {1, 2, 3, 4}));
    ev.push_back(stored(k2.hi, k2.lo, &k1, {5, 6, 7, 8})); // continues the chain: merged
    ev.push_back(removed(k1.hi, k1.lo));
    ev.push_back(removed(k2.hi, k2.lo)); // merged
    size_t n = 0;
    const std::string bytes =
        encoder(EventEncoding::Array, HashForm::Int).batch(12.5, ev, "CPU", &n);
    EXPECT_EQ(n, 3u);
    Unpacked u(bytes);
    ASSERT_TRUE(u.ok);
    const msgpack_object &b = u.root();
    ASSERT_EQ(b.type, MSGPACK_OBJECT_ARRAY);
    ASSERT_EQ(b.via.array.size, 3u); // [ts, events, data_parallel_rank]
    EXPECT_EQ(b.via.array.ptr[0].type, MSGPACK_OBJECT_FLOAT64);
    EXPECT_EQ(b.via.array.ptr[0].via.f64, 12.5);
    EXPECT_EQ(b.via.array.ptr[2].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    const msgpack_object &evs = b.via.array.ptr[1];
    ASSERT_EQ(evs.via.array.size, 3u);

    const msgpack_object &c = evs.via.array.ptr[0];
    ASSERT_EQ(c.type, MSGPACK_OBJECT_ARRAY);
    ASSERT_EQ(c.via.array.size, 1u);
    EXPECT_EQ(str(c.via.array.ptr[0]), "AllBlocksCleared");

    // ["BlockStored", hashes, parent, token_ids, block_size, lora_id, medium, lora_name]
    const msgpack_object &s = evs.via.array.ptr[1];
    ASSERT_EQ(s.via.array.size, 8u);
    EXPECT_EQ(str(s.via.array.ptr[0]), "BlockStored");
    const msgpack_object &hashes = s.via.array.ptr[1];
    ASSERT_EQ(hashes.via.array.size, 2u);
    EXPECT_EQ(hashes.via.array.ptr[0].via.u64, k1.lo); // vLLM's int form: the last 8 bytes
    EXPECT_EQ(hashes.via.array.ptr[1].via.u64, k2.lo);
    EXPECT_EQ(s.via.array.ptr[2].via.u64, p0.lo);
    EXPECT_EQ(s.via.array.ptr[3].via.array.size, 8u); // both blocks' tokens
    EXPECT_EQ(s.via.array.ptr[3].via.array.ptr[7].via.u64, 8u);
    EXPECT_EQ(s.via.array.ptr[4].via.u64, 4u);
    EXPECT_EQ(s.via.array.ptr[5].type, MSGPACK_OBJECT_NIL);
    EXPECT_EQ(str(s.via.array.ptr[6]), "CPU");
    EXPECT_EQ(s.via.array.ptr[7].type, MSGPACK_OBJECT_NIL);

    // ["BlockRemoved", hashes, medium]
    const msgpack_object &r = evs.via.array.ptr[2];
    ASSERT_EQ(r.via.array.size, 3u);
    EXPECT_EQ(str(r.via.array.ptr[0]), "BlockRemoved");
    EXPECT_EQ(r.via.array.ptr[1].via.array.size, 2u);
    EXPECT_EQ(str(r.via.array.ptr[2]), "CPU");
}

TEST(KvEventsEncoder, MapBatchMatchesVllmTaggedMaps) {
    std::vector<FeedEvent> ev{stored(0x0102030405060708ULL, 0x090a0b0c0d0e0f10ULL, nullptr),
                              removed(1, 2)};
    FeedEvent clear;
    clear.kind = FeedKind::Cleared;
    ev.push_back(clear);
    const std::string bytes = encoder(EventEncoding::Map, HashForm::Bytes).batch(1.0, ev, "REDIS");
    Unpacked u(bytes);
    ASSERT_TRUE(u.ok);
    const msgpack_object &evs = u.root().via.array.ptr[1];
    ASSERT_EQ(evs.via.array.size, 3u);

    const msgpack_object &s = evs.via.array.ptr[0];
    ASSERT_EQ(s.type, MSGPACK_OBJECT_MAP);
    EXPECT_EQ(str(s.via.map.ptr[0].key), "type"); // msgspec writes the tag first
    EXPECT_EQ(str(*field(s, "type")), "BlockStored");
    const msgpack_object *h = field(s, "block_hashes");
    ASSERT_TRUE(h);
    ASSERT_EQ(h->via.array.ptr[0].type, MSGPACK_OBJECT_BIN);
    ASSERT_EQ(h->via.array.ptr[0].via.bin.size, 16u);
    const auto *raw = reinterpret_cast<const uint8_t *>(h->via.array.ptr[0].via.bin.ptr);
    for (int i = 0; i < 16; i++)
        EXPECT_EQ(raw[i], i + 1) << i; // the key's 16 bytes, big-endian
    EXPECT_EQ(field(s, "parent_block_hash")->type, MSGPACK_OBJECT_NIL);
    EXPECT_EQ(field(s, "token_ids")->via.array.size, 0u);
    EXPECT_EQ(field(s, "block_size")->via.u64, 4u);
    EXPECT_EQ(field(s, "lora_id")->type, MSGPACK_OBJECT_NIL);
    EXPECT_EQ(str(*field(s, "medium")), "REDIS");
    EXPECT_TRUE(field(s, "lora_name"));

    const msgpack_object &r = evs.via.array.ptr[1];
    EXPECT_EQ(str(*field(r, "type")), "BlockRemoved");
    EXPECT_EQ(field(r, "block_hashes")->via.array.size, 1u);
    EXPECT_EQ(str(*field(r, "medium")), "REDIS");

    const msgpack_object &c = evs.via.array.ptr[2];
    ASSERT_EQ(c.via.map.size, 1u);
    EXPECT_EQ(str(*field(c, "type")), "AllBlocksCleared");
}

TEST(KvEventsEncoder, ChainsSplitWhereTheyBreak) {
    const kv_key a{1, 10}, b{2, 20};
    std::vector<FeedEvent> ev{stored(a.hi, a.lo, nullptr),
                              stored(b.hi, b.lo, &b),           // names itself, not a: a new event
                              stored(3, 30, &b, {1, 2, 3, 4})}; // ids where b had none
    size_t n = 0;
    encoder(EventEncoding::Array, HashForm::Int).batch(0, ev, "CPU", &n);
    EXPECT_EQ(n, 3u);
    ev[2].token_ids.clear();
    encoder(EventEncoding::Array, HashForm::Int).batch(0, ev, "CPU", &n);
    EXPECT_EQ(n, 2u);
}

std::string events_cfg(const std::string &body) {
    return "[[pool]]\nname = \"p\"\nsize = \"64M\"\n\n[pool.events]\n" + body;
}

TEST(KvEventsConfig, Defaults) {
    auto c = parse_config(events_cfg("endpoint = \"tcp://*:5557\"\n"), "t.toml");
    ASSERT_TRUE(c) << c.error();
    const EventsConfig &e = c->pools[0].events;
    EXPECT_TRUE(e.enabled);
    EXPECT_EQ(e.endpoint, "tcp://*:5557");
    EXPECT_EQ(e.encoding, EventEncoding::Array);
    EXPECT_EQ(e.hash_form, HashForm::Int);
    EXPECT_EQ(e.medium, "CPU");
    EXPECT_EQ(e.buffer_steps, 10000u);
    auto none = parse_config("[[pool]]\nname = \"p\"\nsize = \"64M\"\n", "t.toml");
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->pools[0].events.enabled);
}

TEST(KvEventsConfig, AllKeys) {
    auto c = parse_config(events_cfg("endpoint = \"ipc:///run/kv/ev\"\n"
                                     "replay_endpoint = \"tcp://127.0.0.1:5558\"\n"
                                     "topic = \"kv@a@m\"\nencoding = \"map\"\n"
                                     "hash_form = \"bytes\"\nbuffer_steps = 5\nhwm = 7\n"
                                     "max_batch = 9\nmedium = \"DRAM\"\n"),
                          "t.toml");
    ASSERT_TRUE(c) << c.error();
    const EventsConfig &e = c->pools[0].events;
    EXPECT_EQ(e.replay_endpoint, "tcp://127.0.0.1:5558");
    EXPECT_EQ(e.topic, "kv@a@m");
    EXPECT_EQ(e.encoding, EventEncoding::Map);
    EXPECT_EQ(e.hash_form, HashForm::Bytes);
    EXPECT_EQ(e.buffer_steps, 5u);
    EXPECT_EQ(e.hwm, 7u);
    EXPECT_EQ(e.max_batch, 9u);
    EXPECT_EQ(e.medium, "DRAM");
}

TEST(KvEventsConfig, Rejects) {
    const std::pair<std::string, std::string> cases[] = {
        {"", "missing required key \"endpoint\""},
        {"endpoint = \"udp://x:1\"\n", "expected tcp://HOST:PORT"},
        {"endpoint = \"tcp://*:0\"\n", "expected 1 to 65535"},
        {"endpoint = \"tcp://*\"\n", "expected tcp://HOST:PORT"},
        {"endpoint = \"ipc://rel\"\n", "absolute path"},
        {"endpoint = \"tcp://*:1\"\nreplay_endpoint = \"tcp://*:1\"\n", "also the endpoint"},
        {"endpoint = \"tcp://*:1\"\nencoding = \"tagged\"\n", "one of: array, map"},
        {"endpoint = \"tcp://*:1\"\nhash_form = 1\n", "one of: int, bytes"},
        {"endpoint = \"tcp://*:1\"\nmax_batch = 0\n", "pool[0].events.max_batch"},
        {"endpoint = \"tcp://*:1\"\nmedium = \"\"\n", "medium name"},
        {"endpoint = \"tcp://*:1\"\nendpont = \"x\"\n", "did you mean \"endpoint\""},
    };
    for (const auto &[body, want] : cases) {
        auto c = parse_config(events_cfg(body), "t.toml");
        ASSERT_FALSE(c) << body;
        EXPECT_NE(c.error().find(want), std::string::npos) << body << " -> " << c.error();
    }
    auto not_table = parse_config("[[pool]]\nname = \"p\"\nsize = \"64M\"\nevents = 1\n", "t.toml");
    ASSERT_FALSE(not_table);
    EXPECT_NE(not_table.error().find("[pool.events]"), std::string::npos) << not_table.error();
}

} // namespace
} // namespace kv::daemon
