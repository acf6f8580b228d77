// SPDX-License-Identifier: MIT
//
// The main() of a fuzz target built without libFuzzer (gcc, the default
// build): run LLVMFuzzerTestOneInput once over every file named on the
// command line or found (recursively) in a named directory, in sorted order,
// so a meson test replays the committed corpus. A crash, abort or sanitizer
// report ends the process with a non-zero status; an argument that names
// nothing readable, or a run that finds no input at all, fails too (a
// replay that ran nothing would pass without testing anything).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

namespace {

bool read_all(const std::filesystem::path &p, std::vector<uint8_t> &out) {
    std::ifstream f(p, std::ios::binary);
    if (!f) return false;
    out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return !f.bad();
}

} // namespace

int main(int argc, char **argv) {
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    std::vector<std::filesystem::path> inputs;
    for (int i = 1; i < argc; i++) {
        const std::filesystem::path arg(argv[i]);
        std::error_code ec;
        if (std::filesystem::is_directory(arg, ec)) {
            for (const auto &e : std::filesystem::recursive_directory_iterator(arg, ec))
                if (e.is_regular_file()) inputs.push_back(e.path());
            if (ec) {
                fprintf(stderr, "%s: %s\n", argv[i], ec.message().c_str());
                return 2;
            }
        } else if (std::filesystem::is_regular_file(arg, ec)) {
            inputs.push_back(arg);
        } else {
            fprintf(stderr, "%s: not a file or directory\n", argv[i]);
            return 2;
        }
    }
    std::sort(inputs.begin(), inputs.end());
    if (inputs.empty()) {
        fprintf(stderr, "no inputs found: an empty corpus tests nothing\n");
        return 1;
    }
    std::vector<uint8_t> buf;
    size_t bytes = 0;
    for (const auto &p : inputs) {
        if (!read_all(p, buf)) {
            fprintf(stderr, "%s: cannot read\n", p.c_str());
            return 2;
        }
        // Print the name first: if the input crashes, the log says which one.
        fprintf(stderr, "replay %s (%zu bytes)\n", p.c_str(), buf.size());
        LLVMFuzzerTestOneInput(buf.data(), buf.size());
        bytes += buf.size();
    }
    printf("%zu inputs (%zu bytes) ran without a finding\n", inputs.size(), bytes);
    return 0;
}
