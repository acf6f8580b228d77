/* SPDX-License-Identifier: MIT */
/*
 * Run-time twin of region.h's static asserts, shared by the C11 and C++20
 * programs: prints every size and offset beside the value the ABI publishes,
 * so a log shows what each compiler saw. Include after <kvpool/region.h>.
 */
#ifndef KV_TEST_REGION_CHECKS_H
#define KV_TEST_REGION_CHECKS_H

#include <stddef.h>
#include <stdio.h>

static int kv_test_failures;

static void kv_test_check(const char *what, unsigned long long seen, unsigned long long expected)
{
	printf("%-48s %6llu (expected %llu)\n", what, seen, expected);
	if (seen != expected) {
		printf("MISMATCH: %s\n", what);
		kv_test_failures++;
	}
}

#define KV_TEST_SIZE(type, constant) kv_test_check("sizeof(" #type ")", sizeof(type), (constant))
#define KV_TEST_OFFSET(type, field, expected) \
	kv_test_check("offsetof(" #type ", " #field ")", offsetof(type, field), (expected))

static int kv_test_region_checks(void)
{
	KV_TEST_SIZE(struct kv_region_header, KV_REGION_HEADER_SIZE_V1);
	KV_TEST_SIZE(struct kv_region_state, KV_REGION_STATE_SIZE_V1);
	KV_TEST_SIZE(struct kv_class, KV_CLASS_SIZE_V1);
	KV_TEST_SIZE(struct kv_manifest, KV_MANIFEST_SIZE_V1);
	KV_TEST_SIZE(struct kv_namespace, KV_NAMESPACE_SIZE_V1);
	KV_TEST_SIZE(struct kv_client_stats, KV_CLIENT_STATS_SIZE_V1);
	KV_TEST_SIZE(struct kv_client, KV_CLIENT_SIZE_V1);
	KV_TEST_SIZE(struct kv_pin_slot, KV_PIN_SLOT_SIZE_V1);
	KV_TEST_SIZE(struct kv_entry, KV_ENTRY_SIZE_V1);
	KV_TEST_SIZE(struct kv_slab, KV_SLAB_SIZE_V1);
	KV_TEST_SIZE(struct kv_feed_header, KV_FEED_HEADER_SIZE_V1);
	KV_TEST_SIZE(struct kv_feed_slot, KV_FEED_SLOT_SIZE_V1);

	KV_TEST_OFFSET(struct kv_region_header, magic, 0);
	KV_TEST_OFFSET(struct kv_region_header, abi_major, 8);
	KV_TEST_OFFSET(struct kv_region_header, abi_minor, 10);
	KV_TEST_OFFSET(struct kv_region_header, header_size, 12);
	KV_TEST_OFFSET(struct kv_region_header, compat_features, 16);
	KV_TEST_OFFSET(struct kv_region_header, incompat_features, 24);
	KV_TEST_OFFSET(struct kv_region_header, region_size, 32);
	KV_TEST_OFFSET(struct kv_region_header, max_clients, 88);
	KV_TEST_OFFSET(struct kv_region_header, slab_size, 120);
	KV_TEST_OFFSET(struct kv_region_header, state_off, 128);
	KV_TEST_OFFSET(struct kv_region_header, data_len, 280);
	KV_TEST_OFFSET(struct kv_region_header, evict_policy, 288);
	KV_TEST_OFFSET(struct kv_region_header, daemon_slots, 292);
	KV_TEST_OFFSET(struct kv_region_header, feed_off, 296);
	KV_TEST_OFFSET(struct kv_region_header, feed_len, 304);
	KV_TEST_OFFSET(struct kv_region_header, feed_slots, 312);
	KV_TEST_OFFSET(struct kv_region_header, feed_slot_size, 316);
	KV_TEST_OFFSET(struct kv_region_header, reserved, 320);
	KV_TEST_OFFSET(struct kv_feed_header, head, 0);
	KV_TEST_OFFSET(struct kv_feed_header, dropped, 64);
	KV_TEST_OFFSET(struct kv_feed_header, floor, 128);
	KV_TEST_OFFSET(struct kv_feed_slot, seq, 0);
	KV_TEST_OFFSET(struct kv_feed_slot, kind, 8);
	KV_TEST_OFFSET(struct kv_feed_slot, ns, 16);
	KV_TEST_OFFSET(struct kv_feed_slot, n_ids, 20);
	KV_TEST_OFFSET(struct kv_feed_slot, key_lo, 24);
	KV_TEST_OFFSET(struct kv_feed_slot, parent_lo, 40);
	KV_TEST_OFFSET(struct kv_feed_slot, length, 56);
	KV_TEST_OFFSET(struct kv_feed_slot, tokens, 64);
	KV_TEST_OFFSET(struct kv_feed_slot, entry, 68);
	KV_TEST_OFFSET(struct kv_feed_slot, gen, 72);
	KV_TEST_OFFSET(struct kv_feed_slot, time_ns, 80);
	KV_TEST_OFFSET(struct kv_feed_slot, token_ids, 128);
	KV_TEST_OFFSET(struct kv_region_state, slab_hand, 64);
	KV_TEST_OFFSET(struct kv_region_state, reap_epoch, 128);
	KV_TEST_OFFSET(struct kv_region_state, lfu_floor, 192);
	KV_TEST_OFFSET(struct kv_region_state, room_epoch, 200);
	KV_TEST_OFFSET(struct kv_namespace, manifest, 64);
	KV_TEST_OFFSET(struct kv_client, stats, 64);
	KV_TEST_OFFSET(struct kv_entry, checksum, 64);
	KV_TEST_OFFSET(struct kv_entry, clock, 96);
	KV_TEST_OFFSET(struct kv_entry, flags, 100);
	KV_TEST_OFFSET(struct kv_entry, rank, 104);
	KV_TEST_OFFSET(struct kv_entry, parent, 112);
	KV_TEST_OFFSET(struct kv_entry, kids, 120);
	KV_TEST_OFFSET(struct kv_entry, ttl_ms, 124);

	/* The magic is "KVPOOL\0\1" read little-endian. */
	kv_test_check("KV_REGION_MAGIC byte 0 ('K')", KV_REGION_MAGIC & 0xff, 'K');
	kv_test_check("KV_REGION_MAGIC byte 7", KV_REGION_MAGIC >> 56, 1);
	kv_test_check("KV_HEADER_BYTES >= header size", KV_HEADER_BYTES >= KV_REGION_HEADER_SIZE_V1, 1);

	if (kv_test_failures) {
		printf("%d mismatches\n", kv_test_failures);
		return 1;
	}
	printf("all sizes and offsets match\n");
	return 0;
}

#endif /* KV_TEST_REGION_CHECKS_H */
