// Launchers for the emulated memory-phase kernels of kernels/cuda/memory.cu (see shim.h and launch.cpp):
// extern "C" entry points for ctypes. The fiber scheduler is launch.cpp's, repeated here so that this
// library builds from memory.cu alone (launch.cpp includes gpuproof.cu and wraps its kernels).
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
void emu_table_pad(unsigned grid, unsigned block, uint32_t* c_round, const uint32_t* pk, uint32_t round_index,
                   unsigned long long n_leaves) {
    emu_launch(grid, block, [=] { table_pad(c_round, pk, round_index, n_leaves); });
}

void emu_walk(unsigned grid, unsigned block, const uint4* table, unsigned long long n_leaves, const uint32_t* wk,
              unsigned long long first_lane, unsigned long long n_lanes, int steps, uint32_t* states_out,
              uint32_t* leaf_out) {
    emu_launch(grid, block, [=] { walk(table, n_leaves, wk, first_lane, n_lanes, steps, states_out, leaf_out); });
}
}
