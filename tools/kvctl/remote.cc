// SPDX-License-Identifier: MIT
#include "remote.h"

#include "output.h"

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace kvctl {

namespace {

std::string list(const json &o, const char *key, const char *empty) {
    const json *a = field(o, key);
    if (!a || !a->is_array()) return kNone;
    if (a->empty()) return empty;
    std::string s;
    for (const json &v : *a)
        s += (s.empty() ? "" : ", ") +
             (v.is_string() ? sanitize(v.get<std::string>()) : any_value(v));
    return s;
}

std::string seconds(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v || !v->is_number()) return kNone;
    char b[32];
    std::snprintf(b, sizeof b, "%.1f s", v->get<double>());
    return b;
}

void print_one(const std::string &pool, const json &r) {
    std::printf("pool %s:\n", pool.c_str());
    if (!r.is_object() || get_bool(r, "enabled") != true) {
        std::printf("  remote tier: none\n");
        return;
    }
    std::vector<std::pair<std::string, std::string>> l;
    const json *q = field(r, "queue");
    const json empty = json::object();
    const json &qq = q && q->is_object() ? *q : empty;
    std::string rejected;
    uint64_t rejected_total = 0;
    if (const json *rj = field(r, "rejected"); rj && rj->is_object())
        for (const auto &[k, v] : rj->items())
            if (v.is_number_unsigned() && v.get<uint64_t>()) {
                rejected_total += v.get<uint64_t>();
                rejected += (rejected.empty() ? " (" : ", ") + sanitize(k) + " " +
                            std::to_string(v.get<uint64_t>());
            }
    if (!rejected.empty()) rejected += ")";
    const auto bw = get_u64(r, "bandwidth");
    const auto ttl = get_u64(r, "ttl_s");
    const auto encrypted = get_bool(r, "encrypted");
    l = {
        {"seeds", list(r, "seeds", "-")},
        {"key prefix", text(r, "key_prefix")},
        {"write", text(r, "write")},
        {"namespaces", list(r, "namespaces", "all")},
        {"bandwidth", bw == 0u ? std::string("no cap") : size(bw) + "/s"},
        {"ttl", ttl == 0u ? std::string("none") : count(ttl) + " s"},
        {"medium", text(r, "medium")},
        {"encryption", !encrypted   ? std::string(kNone)
                       : *encrypted ? "sealed with key " + text(r, "key")
                                    : std::string("none (values in the clear)")},
        {"queue", count(qq, "blocks") + " blocks, " + size(qq, "bytes") + " of " +
                      size(qq, "limit_bytes") + ", oldest " + seconds(qq, "oldest_age_s")},
        {"uploads", count(r, "uploads") + " (" + size(r, "upload_bytes") + ")"},
        {"upload errors", count(r, "upload_errors")},
        {"upload dropped", count(r, "upload_dropped") + " (queue full)"},
        {"upload skipped", count(r, "upload_skipped") + " (gone, replaced or fetched)"},
        {"upload corrupt", count(r, "upload_corrupt")},
        {"fetches", count(r, "fetches")},
        {"fetched", count(r, "fetched_blocks") + " blocks (" + size(r, "fetched_bytes") + ")"},
        {"fetch present", count(r, "fetch_present")},
        {"fetch missing", count(r, "fetch_missing")},
        {"fetch errors", count(r, "fetch_errors")},
        {"rejected", std::to_string(rejected_total) + rejected},
        {"last error",
         text(r, "last_error") +
             (field(r, "last_error_age_s") && field(r, "last_error_age_s")->is_number()
                  ? " (" + seconds(r, "last_error_age_s") + " ago)"
                  : "")},
    };
    size_t w = 0;
    for (const auto &[k, v] : l)
        w = std::max(w, k.size() + 1);
    for (const auto &[k, v] : l)
        std::printf("  %-*s %s\n", int(w), (k + ":").c_str(), v.c_str());
}

} // namespace

Result<int> print_remote(const Command &c, const json &doc) {
    if (const json *pools = field(doc, "pools")) {
        auto arr = array_field(c, doc, "pools");
        if (!arr) return std::unexpected(arr.error());
        if (pools->empty()) std::printf("no pool has a remote tier\n");
        bool first = true;
        for (const json &p : **arr) {
            if (!first) std::printf("\n");
            first = false;
            const json *r = field(p, "remote");
            print_one(text(p, "pool"), r ? *r : json());
        }
        return kExitOk;
    }
    const json *r = field(doc, "remote");
    print_one(text(doc, "pool"), r ? *r : json());
    return kExitOk;
}

} // namespace kvctl
