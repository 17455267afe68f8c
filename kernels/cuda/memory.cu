// gpuproof/2 memory-phase CUDA kernels (docs/protocol.md, "Spec v2: memory phase"). The NumPy reference in
// kernels/memory.py is normative: every kernel here must give byte-identical output, which
// tests/kernels/test_memory_emulated.py (host emulation) and bench/device_check.py (a GPU) check.
//
// Entry points (extern "C", compiled once per device with cupy.RawModule):
//   table_pad   XOR each 1 KiB leaf of one round's C, in place, with its pad: 32 SHA-256 digests
//               D_j = SHA-256(PK || u32le(round) || u32le(leaf) || u32le(j)), one thread per digest
//   walk        lanes of the walk, one warp per lane: seed from SHA-256(WK || u64le(lane)), `steps` reads
//               of a whole leaf at (s1:s0) mod N, each folded by the warp; writes the final states and
//               their RFC 6962 leaf hashes SHA-256(0x00 || state) (the walk tree's level 0; gpuproof.cu's
//               merkle_levels builds the rest)

#ifdef __CUDACC_RTC__
typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
#else
#include <stdint.h>
#endif

__constant__ uint32_t MEM_K256[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u};

#define MEM_GAMMA 0x9E3779B9u
#define MEM_FOLD_MUL 0x85EBCA6Bu
#define MEM_WARPS 8  // lanes (warps) per block of `walk`

__device__ __forceinline__ uint32_t mem_rotr(uint32_t x, int n) { return __funnelshift_r(x, x, n); }
__device__ __forceinline__ uint32_t mem_rotl(uint32_t x, int n) { return __funnelshift_r(x, x, 32 - n); }
__device__ __forceinline__ uint32_t mem_bswap(uint32_t x) { return __byte_perm(x, 0, 0x0123); }

// One SHA-256 compression from the initial state of a message that fits one block (<= 55 bytes); w holds
// the padded block as big-endian words and is overwritten. out gets the digest as little-endian words
// (the digest's bytes, 4 at a time, as a little-endian load would read them).
__device__ __forceinline__ void mem_sha256_one_block(uint32_t w[16], uint32_t out_le[8]) {
    uint32_t a = 0x6a09e667u, b = 0xbb67ae85u, c = 0x3c6ef372u, d = 0xa54ff53au;
    uint32_t e = 0x510e527fu, f = 0x9b05688cu, g = 0x1f83d9abu, h = 0x5be0cd19u;
#pragma unroll
    for (int i = 0; i < 64; ++i) {
        uint32_t wi;
        if (i < 16) {
            wi = w[i];
        } else {
            uint32_t w2 = w[(i - 2) & 15], w15 = w[(i - 15) & 15];
            uint32_t s0 = mem_rotr(w15, 7) ^ mem_rotr(w15, 18) ^ (w15 >> 3);
            uint32_t s1 = mem_rotr(w2, 17) ^ mem_rotr(w2, 19) ^ (w2 >> 10);
            wi = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
            w[i & 15] = wi;
        }
        uint32_t t1 = h + (mem_rotr(e, 6) ^ mem_rotr(e, 11) ^ mem_rotr(e, 25)) + ((e & f) ^ (~e & g)) + MEM_K256[i] + wi;
        uint32_t t2 = (mem_rotr(a, 2) ^ mem_rotr(a, 13) ^ mem_rotr(a, 22)) + ((a & b) | (c & (a | b)));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    out_le[0] = mem_bswap(0x6a09e667u + a); out_le[1] = mem_bswap(0xbb67ae85u + b);
    out_le[2] = mem_bswap(0x3c6ef372u + c); out_le[3] = mem_bswap(0xa54ff53au + d);
    out_le[4] = mem_bswap(0x510e527fu + e); out_le[5] = mem_bswap(0x9b05688cu + f);
    out_le[6] = mem_bswap(0x1f83d9abu + g); out_le[7] = mem_bswap(0x5be0cd19u + h);
}

// A 32-byte key (8 little-endian words) followed by `extra` little-endian words, padded: one block.
__device__ __forceinline__ void mem_key_block(const uint32_t key_le[8], const uint32_t* extra, int n_extra,
                                              uint32_t w[16]) {
#pragma unroll
    for (int t = 0; t < 8; ++t) w[t] = mem_bswap(key_le[t]);
    for (int t = 0; t < n_extra; ++t) w[8 + t] = mem_bswap(extra[t]);
    w[8 + n_extra] = 0x80000000u;
    for (int t = 9 + n_extra; t < 15; ++t) w[t] = 0;
    w[15] = (32u + 4u * n_extra) * 8u;
}

// ------------------------------------------------------------------------------------------------
// table_pad: c_round is one round's C (leaves of 256 words), leaves [0, n_leaves) of it; pk is PK as 8
// little-endian words. Thread i makes digest j = i % 32 of leaf i / 32 and XORs it into bytes 32j..32j+31.
// ------------------------------------------------------------------------------------------------
extern "C" __global__ void table_pad(uint32_t* __restrict__ c_round, const uint32_t* __restrict__ pk,
                                     uint32_t round_index, unsigned long long n_leaves) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_leaves * 32ull) return;
    const uint32_t leaf = (uint32_t)(i >> 5), j = (uint32_t)(i & 31);
    uint32_t key[8], extra[3] = {round_index, leaf, j}, w[16], d[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) key[t] = pk[t];
    mem_key_block(key, extra, 3, w);
    mem_sha256_one_block(w, d);
    uint4* out = reinterpret_cast<uint4*>(c_round + (unsigned long long)leaf * 256ull + 8ull * j);
    uint4 lo = out[0], hi = out[1];
    lo.x ^= d[0]; lo.y ^= d[1]; lo.z ^= d[2]; lo.w ^= d[3];
    hi.x ^= d[4]; hi.y ^= d[5]; hi.z ^= d[6]; hi.w ^= d[7];
    out[0] = lo;
    out[1] = hi;
}

// g(t) of the fold: u ^ (u >> 15) with u = t * FOLD_MUL.
__device__ __forceinline__ uint32_t mem_g(uint32_t t) {
    const uint32_t u = t * MEM_FOLD_MUL;
    return u ^ (u >> 15);
}

// ChaCha's quarter round (RFC 8439 2.1).
__device__ __forceinline__ void mem_quarter(uint32_t& a, uint32_t& b, uint32_t& c, uint32_t& d) {
    a += b; d = mem_rotl(d ^ a, 16);
    c += d; b = mem_rotl(b ^ c, 12);
    a += b; d = mem_rotl(d ^ a, 8);
    c += d; b = mem_rotl(b ^ c, 7);
}

// ------------------------------------------------------------------------------------------------
// walk: blocks of MEM_WARPS warps, warp w of block b walks lane first_lane + b * MEM_WARPS + w. table is
// T (n_leaves leaves of 64 uint4), wk the walk key as 8 little-endian words. Each thread of the warp reads
// 32 bytes of the leaf (words 8t..8t+7) and folds them; the warp adds the 32 partial folds through shared
// memory (the sum mod 2^32 does not depend on the order). states_out gets 4 words per lane, leaf_out the
// lane's leaf hash (8 words), both indexed from first_lane's slot 0.
// ------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(MEM_WARPS * 32) walk(
        const uint4* __restrict__ table, unsigned long long n_leaves, const uint32_t* __restrict__ wk,
        unsigned long long first_lane, unsigned long long n_lanes, int steps, uint32_t* __restrict__ states_out,
        uint32_t* __restrict__ leaf_out) {
    __shared__ uint32_t part[MEM_WARPS][32];
    __shared__ uint32_t seed[MEM_WARPS][4];
    const unsigned warp = threadIdx.x >> 5, t = threadIdx.x & 31;
    const unsigned long long slot = (unsigned long long)blockIdx.x * MEM_WARPS + warp;
    if (slot >= n_lanes) return;  // a whole warp at once: no barrier is left waiting
    const unsigned long long lane = first_lane + slot;
    if (t == 0) {
        uint32_t key[8], extra[2] = {(uint32_t)lane, (uint32_t)(lane >> 32)}, w[16], d[8];
        for (int i = 0; i < 8; ++i) key[i] = wk[i];
        mem_key_block(key, extra, 2, w);
        mem_sha256_one_block(w, d);
        for (int i = 0; i < 4; ++i) seed[warp][i] = d[i];
    }
    __syncwarp();
    uint32_t s0 = seed[warp][0], s1 = seed[warp][1], s2 = seed[warp][2], s3 = seed[warp][3];
    for (int step = 0; step < steps; ++step) {
        const unsigned long long address = (((unsigned long long)s1 << 32) | s0) % n_leaves;
        const uint4* leaf = table + address * 64ull + 2u * t;
        const uint4 lo = __ldcg(leaf), hi = __ldcg(leaf + 1);
        uint32_t key = s2 + (8u * t) * MEM_GAMMA, f = 0;
        f += mem_g(lo.x ^ key); key += MEM_GAMMA;
        f += mem_g(lo.y ^ key); key += MEM_GAMMA;
        f += mem_g(lo.z ^ key); key += MEM_GAMMA;
        f += mem_g(lo.w ^ key); key += MEM_GAMMA;
        f += mem_g(hi.x ^ key); key += MEM_GAMMA;
        f += mem_g(hi.y ^ key); key += MEM_GAMMA;
        f += mem_g(hi.z ^ key); key += MEM_GAMMA;
        f += mem_g(hi.w ^ key);
        part[warp][t] = f;
        __syncwarp();
        uint32_t total = 0;
#pragma unroll
        for (int i = 0; i < 32; ++i) total += part[warp][i];
        __syncwarp();  // every thread has read its warp's partials before any writes the next step's
        s0 ^= total;
        mem_quarter(s0, s1, s2, s3);
        mem_quarter(s0, s1, s2, s3);
    }
    if (t == 0) {
        uint32_t* st = states_out + 4ull * slot;
        st[0] = s0; st[1] = s1; st[2] = s2; st[3] = s3;
        // SHA-256(0x00 || state): 17 bytes, one block. Big-endian word i holds bytes 4i-1 .. 4i+2.
        uint32_t w[16], d[8];
        w[0] = __byte_perm(0u, s0, 0x3456);
        w[1] = __byte_perm(s0, s1, 0x3456);
        w[2] = __byte_perm(s1, s2, 0x3456);
        w[3] = __byte_perm(s2, s3, 0x3456);
        w[4] = (s3 & 0xff000000u) | 0x00800000u;
        for (int i = 5; i < 15; ++i) w[i] = 0;
        w[15] = 17u * 8u;
        mem_sha256_one_block(w, d);
        for (int i = 0; i < 8; ++i) leaf_out[8ull * slot + i] = d[i];
    }
}
