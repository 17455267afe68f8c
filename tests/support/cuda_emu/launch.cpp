// Launchers for the emulated kernels (see shim.h): extern "C" entry points for ctypes, one per kernel.
#include "shim.h"

#include <thread>

#include GP_SOURCE

template <typename Body>
static void emu_launch(unsigned grid, unsigned block, Body body) {
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        emu_block_barrier = std::make_unique<std::barrier<>>(block);
        emu_warp_barriers.clear();
        for (unsigned w = 0; w < block; w += 32) {
            emu_warp_barriers.push_back(std::make_unique<std::barrier<>>(block - w < 32 ? block - w : 32));
        }
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([t, &body] {
                threadIdx.x = t;
                body();
            });
        }
        for (auto& th : threads) th.join();
    }
}

extern "C" {
void emu_round_key(unsigned grid, unsigned block, const uint8_t* seed, uint32_t round_index,
                   const uint8_t* prev_root, unsigned long long* key_out) {
    emu_launch(grid, block, [=] { round_key(seed, round_index, prev_root, key_out); });
}

void emu_gen_nibbles(unsigned grid, unsigned block, uint4* out, const unsigned long long* key,
                     unsigned long long first_block, unsigned long long n_blocks) {
    emu_launch(grid, block, [=] { gen_nibbles(out, key, first_block, n_blocks); });
}

void emu_leaf_hash_1k(unsigned grid, unsigned block, const uint4* data, unsigned long long n_chunks, uint4* out) {
    emu_launch(grid, block, [=] { leaf_hash_1k(data, n_chunks, out); });
}

void emu_merkle_levels(unsigned grid, unsigned block, uint32_t* levels, unsigned long long n0, int start_level,
                       int num_levels, unsigned long long first_node, unsigned long long end_node,
                       uint32_t* root_out) {
    emu_launch(grid, block, [=] { merkle_levels(levels, n0, start_level, num_levels, first_node, end_node, root_out); });
}

void emu_copy_hash(unsigned grid, unsigned block, const uint32_t* src, uint32_t* dst) {
    emu_launch(grid, block, [=] { copy_hash(src, dst); });
}
}
