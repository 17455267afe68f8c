// Host emulation of the CUDA features kernels/cuda/gpuproof.cu uses, so that the very same kernel source
// compiles with g++ and runs on the CPU in CI (tests/support/cuda_emu.py). Each CUDA thread of a block is
// a fiber (ucontext) on one OS thread; blocks run one after another (launch.cpp); __syncthreads and
// __syncwarp switch to the next fiber until every thread of the block (or warp) has arrived. This checks
// the kernels' logic (indexing, staging, tree grouping, launch plans) against the NumPy reference, and
// fails loudly on a barrier that not every thread reaches; it says nothing about speed, the memory
// model or scheduling on a real GPU (bench/device_check.py does that).
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#define GP_EMULATE 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __constant__
#define __shared__ static
#define __launch_bounds__(...)

struct uint4 { uint32_t x, y, z, w; };
struct dim3 { unsigned int x = 1, y = 1, z = 1; };
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return uint4{x, y, z, w}; }

// Set by the fiber scheduler before it resumes a thread (only one runs at a time).
inline dim3 threadIdx, blockIdx, blockDim;

struct EmuBarrier {
    unsigned expected = 0, arrived = 0;
    std::vector<unsigned> waiting;  // thread indices parked here
};
inline EmuBarrier emu_block_barrier;
inline std::vector<EmuBarrier> emu_warp_barriers;
void emu_wait(EmuBarrier& barrier);  // launch.cpp

inline void __syncthreads() { emu_wait(emu_block_barrier); }
inline void __syncwarp(unsigned int = 0xffffffffu) { emu_wait(emu_warp_barriers[threadIdx.x / 32]); }

// __funnelshift_r(lo, hi, n): the low 32 bits of (hi:lo) >> (n & 31) (CUDA Math API).
inline uint32_t __funnelshift_r(uint32_t lo, uint32_t hi, unsigned int n) {
    const uint64_t both = ((uint64_t)hi << 32) | lo;
    return (uint32_t)(both >> (n & 31));
}

// __byte_perm(x, y, s): byte i of the result is byte (s >> 4i) & 7 of the 8 bytes y:x (x the low half).
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
    const uint64_t both = ((uint64_t)y << 32) | x;
    uint32_t out = 0;
    for (int i = 0; i < 4; ++i) {
        const unsigned sel = (s >> (4 * i)) & 7;
        out |= (uint32_t)((both >> (8 * sel)) & 0xff) << (8 * i);
    }
    return out;
}

inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }

// The PTX integer instructions the kernels issue through inline asm (PTX ISA: mad.lo.u32, mul.hi.u32).
inline uint32_t ptx_mad_lo(uint32_t a, uint32_t b, uint32_t c) { return a * b + c; }
inline uint32_t ptx_mul_hi(uint32_t a, uint32_t b) { return (uint32_t)(((uint64_t)a * b) >> 32); }
