// Launchers for the emulated kernels (see shim.h): extern "C" entry points for ctypes, one per kernel.
#include "shim.h"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <functional>

#include GP_SOURCE

namespace {

constexpr size_t kStackBytes = 128 * 1024;

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false;
    bool runnable = true;
};

std::vector<Fiber> fibers;
ucontext_t scheduler;
unsigned current = 0;
const std::function<void()>* current_body = nullptr;

void fiber_main() {
    (*current_body)();
    fibers[current].done = true;
    // returning resumes uc_link: the scheduler
}

}  // namespace

// Park the running thread at `barrier` until every thread it expects has arrived.
void emu_wait(EmuBarrier& barrier) {
    barrier.waiting.push_back(current);
    if (++barrier.arrived == barrier.expected) {
        for (unsigned t : barrier.waiting) fibers[t].runnable = true;
        barrier.waiting.clear();
        barrier.arrived = 0;
    } else {
        fibers[current].runnable = false;
    }
    swapcontext(&fibers[current].ctx, &scheduler);
}

// One block at a time; within a block, resume every runnable thread in turn until all have returned.
static void emu_launch(unsigned grid, unsigned block, const std::function<void()>& body) {
    blockDim.x = block;
    fibers.resize(block);
    for (auto& f : fibers) f.stack.resize(kStackBytes);
    current_body = &body;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        emu_block_barrier = EmuBarrier{block, 0, {}};
        emu_warp_barriers.clear();
        for (unsigned w = 0; w < block; w += 32) emu_warp_barriers.push_back(EmuBarrier{block - w < 32 ? block - w : 32, 0, {}});
        for (unsigned t = 0; t < block; ++t) {
            Fiber& f = fibers[t];
            f.done = false;
            f.runnable = true;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack.data();
            f.ctx.uc_stack.ss_size = f.stack.size();
            f.ctx.uc_link = &scheduler;
            makecontext(&f.ctx, fiber_main, 0);
        }
        unsigned finished = 0;
        while (finished < block) {
            bool progressed = false;
            for (unsigned t = 0; t < block; ++t) {
                Fiber& f = fibers[t];
                if (f.done || !f.runnable) continue;
                current = t;
                threadIdx.x = t;
                swapcontext(&scheduler, &f.ctx);
                progressed = true;
                if (f.done) ++finished;
            }
            if (!progressed) {
                std::fprintf(stderr, "cuda_emu: block %u deadlocked: a barrier that not every thread reaches\n", b);
                std::abort();
            }
        }
    }
}

extern "C" {
void emu_round_key(unsigned grid, unsigned block, const uint8_t* seed, uint32_t round_index,
                   const uint8_t* prev_root, unsigned long long* key_out) {
    emu_launch(grid, block, [=] { round_key(seed, round_index, prev_root, key_out); });
}

void emu_round_key_v2(unsigned grid, unsigned block, const uint8_t* seed, uint32_t round_index,
                      const uint8_t* prev_root, unsigned long long* key_out) {
    emu_launch(grid, block, [=] { round_key_v2(seed, round_index, prev_root, key_out); });
}

void emu_gen_bytes(unsigned grid, unsigned block, uint4* out, const unsigned long long* key,
                   unsigned long long first_block, unsigned long long n_blocks) {
    emu_launch(grid, block, [=] { gen_bytes(out, key, first_block, n_blocks); });
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
