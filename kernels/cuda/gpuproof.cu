// gpuproof/1 and gpuproof/2 CUDA kernels (docs/protocol.md, "Spec v1", "Spec v2"). The NumPy reference in
// kernels/reference.py is normative: every kernel here must give byte-identical output, which
// bench/device_check.py and tests/kernels/test_cuda.py check.
//
// Entry points (extern "C", compiled once per device with cupy.RawModule):
//   round_key      rs_r = SHA-256("gpuproof.round.v1" || seed || u32le(r) || prev_root); key words of A_r
//   round_key_v2   the same with "gpuproof.round.v2" (spec v2)
//   gen_nibbles    Philox4x64-10 nibble stream -> int8 matrix, from any Philox block (spec v1)
//   gen_bytes      Philox4x64-10 byte stream -> int8 matrix, from any Philox block (spec v2)
//   leaf_hash_1k   SHA-256(0x00 || chunk) over 1 KiB chunks
//   merkle_levels  RFC 6962 interior levels, up to 9 levels per launch, every level kept, root copied out
//   copy_hash      one 32-byte hash from a level buffer into the roots array

#ifdef __CUDACC_RTC__
// NVRTC ships no C library headers; these are the types glibc's <stdint.h> gives on every CUDA host.
typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
#else
#include <stdint.h>
#endif

// ------------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4)
// ------------------------------------------------------------------------------------------------
__constant__ uint32_t K256[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u};

__device__ __forceinline__ uint32_t rotr32(uint32_t x, int n) { return __funnelshift_r(x, x, n); }
__device__ __forceinline__ uint32_t bswap32(uint32_t x) { return __byte_perm(x, 0, 0x0123); }

// Pipe balancing (measured: bench/kernel_variants.py, docs/performance.md). SHA-256 is bound by the
// integer ALU pipe (LOP3, SHF, IADD3, PRMT: 64 lanes per SM per clock on sm_80/sm_90) while the FMA pipe
// (IMAD, 64 lanes) idles. The throughput variant (FMA = true) does the 2-input adds as IMAD (a * 1 + b)
// and the plain shifts of sigma0/sigma1 as IMAD.HI; the multipliers come from constant memory so ptxas
// cannot fold them back into ALU instructions. On an H200 it hashes leaves 10% faster, but IMAD's longer
// latency makes the latency-bound upper tree levels slower, so interior nodes use FMA = false.
// (Rotations through IMAD + IMAD.HI were slower still and were dropped.)
//   GP_LEAF_FMA  1 (default): leaves use the FMA variant
//   GP_NODE_FMA  0 (default): interior nodes use the ALU variant
//   GP_T1_FMA    1: in the FMA variant, h + K[i] + W[i] as two IMADs instead of one IADD3 (-64 ALU-pipe,
//                +128 FMA-pipe instructions per compression; bench/sass_mix.py models it 6% faster; not yet
//                timed on a GPU: bench/kernel_variants.py times it)
#ifndef GP_LEAF_FMA
#define GP_LEAF_FMA 1
#endif
#ifndef GP_NODE_FMA
#define GP_NODE_FMA 0
#endif
#ifndef GP_T1_FMA
#define GP_T1_FMA 0
#endif

// 1, 2^29 (x >> 3 as the high word of x * 2^29), 2^22 (x >> 10).
__constant__ uint32_t GP_OPAQUE[3] = {1u, 1u << 29, 1u << 22};

// The FMA-pipe instructions, as PTX so that ptxas keeps them on that pipe. Under GP_EMULATE (this source
// compiled for the host by tests/support/cuda_emu) shim.h gives the same three with PTX's semantics in C.
#ifndef GP_EMULATE
__device__ __forceinline__ uint32_t ptx_mad_lo(uint32_t a, uint32_t b, uint32_t c) {  // low word of a*b, + c
    uint32_t d;
    asm("mad.lo.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
__device__ __forceinline__ uint32_t ptx_mul_hi(uint32_t a, uint32_t b) {  // high word of a*b
    uint32_t d;
    asm("mul.hi.u32 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}
#endif

template <bool FMA>
__device__ __forceinline__ uint32_t add2(uint32_t a, uint32_t b) {
    return FMA ? ptx_mad_lo(a, GP_OPAQUE[0], b) : a + b;
}

template <bool FMA>
__device__ __forceinline__ uint32_t shr(uint32_t x, int n, int slot) {
    return FMA ? ptx_mul_hi(x, GP_OPAQUE[slot]) : x >> n;
}

// Message word t of a stream shifted right by one byte: bytes (prev[3], cur[0], cur[1], cur[2]) read
// big-endian, where prev/cur are little-endian loads. This is how the 0x00 / 0x01 RFC 6962 prefix is
// absorbed without copying the data.
__device__ __forceinline__ uint32_t shifted_word(uint32_t prev, uint32_t cur) {
    return __byte_perm(prev, cur, 0x3456);
}

__device__ __forceinline__ void sha256_init(uint32_t s[8]) {
    s[0] = 0x6a09e667u; s[1] = 0xbb67ae85u; s[2] = 0x3c6ef372u; s[3] = 0xa54ff53au;
    s[4] = 0x510e527fu; s[5] = 0x9b05688cu; s[6] = 0x1f83d9abu; s[7] = 0x5be0cd19u;
}

template <bool FMA>
__device__ __forceinline__ void sha256_compress(uint32_t s[8], uint32_t w[16]) {
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
#pragma unroll
    for (int i = 0; i < 64; ++i) {
        uint32_t wi;
        if (i < 16) {
            wi = w[i];
        } else {
            uint32_t w2 = w[(i - 2) & 15], w15 = w[(i - 15) & 15];
            uint32_t s0 = rotr32(w15, 7) ^ rotr32(w15, 18) ^ shr<FMA>(w15, 3, 1);
            uint32_t s1 = rotr32(w2, 17) ^ rotr32(w2, 19) ^ shr<FMA>(w2, 10, 2);
            wi = add2<FMA>(add2<FMA>(w[i & 15], s0), add2<FMA>(w[(i - 7) & 15], s1));
            w[i & 15] = wi;
        }
        uint32_t t1 = (FMA && GP_T1_FMA) ? add2<FMA>(add2<FMA>(h, wi), K256[i]) : h + K256[i] + wi;
        t1 = add2<FMA>(add2<FMA>(t1, rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)), (e & f) ^ (~e & g));
        uint32_t t2 = add2<FMA>(rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22), (a & b) | (c & (a | b)));
        h = g; g = f; f = e; e = add2<FMA>(d, t1); d = c; c = b; b = a; a = add2<FMA>(t1, t2);
    }
    s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

// SHA-256(0x01 || left || right): RFC 6962 interior node. x holds left||right as 16 little-endian words.
__device__ __forceinline__ void node_hash_words(const uint32_t x[16], uint32_t out_le[8]) {
    uint32_t s[8], w[16];
    sha256_init(s);
    w[0] = shifted_word(0x01000000u, x[0]);
#pragma unroll
    for (int t = 1; t < 16; ++t) w[t] = shifted_word(x[t - 1], x[t]);
    sha256_compress<GP_NODE_FMA>(s, w);
    w[0] = (x[15] & 0xff000000u) | 0x00800000u;  // last byte of right, then the 0x80 pad byte
#pragma unroll
    for (int t = 1; t < 15; ++t) w[t] = 0;
    w[15] = 65 * 8;
    sha256_compress<GP_NODE_FMA>(s, w);
#pragma unroll
    for (int t = 0; t < 8; ++t) out_le[t] = bswap32(s[t]);  // digest bytes, as little-endian words
}

// ------------------------------------------------------------------------------------------------
// round_key, round_key_v2: one thread. seed and prev_root are 32 bytes; key_out gets the two little-endian
// uint64 Philox key words of A_r (the first 16 bytes of rs_r). The domain string is "gpuproof.round.v1" or
// "gpuproof.round.v2": both 17 bytes, so the message is 85 bytes and two SHA-256 blocks either way.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ void round_key_of(char version, const uint8_t* __restrict__ seed, uint32_t round_index,
                                             const uint8_t* __restrict__ prev_root,
                                             unsigned long long* __restrict__ key_out) {
    const char domain[17] = {'g', 'p', 'u', 'p', 'r', 'o', 'o', 'f', '.', 'r', 'o', 'u', 'n', 'd', '.', 'v', version};
    uint8_t msg[128];
    int n = 0;
    for (int i = 0; i < 17; ++i) msg[n++] = (uint8_t)domain[i];
    for (int i = 0; i < 32; ++i) msg[n++] = seed[i];
    for (int i = 0; i < 4; ++i) msg[n++] = (uint8_t)(round_index >> (8 * i));
    for (int i = 0; i < 32; ++i) msg[n++] = prev_root[i];
    // n == 85: pad to two blocks
    msg[n++] = 0x80;
    while (n < 120) msg[n++] = 0;
    const unsigned long long bits = 85ull * 8;
    for (int i = 0; i < 8; ++i) msg[n++] = (uint8_t)(bits >> (56 - 8 * i));
    uint32_t s[8], w[16];
    sha256_init(s);
    for (int blk = 0; blk < 2; ++blk) {
        for (int t = 0; t < 16; ++t) {
            const uint8_t* p = msg + 64 * blk + 4 * t;
            w[t] = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
        }
        sha256_compress<false>(s, w);
    }
    key_out[0] = ((unsigned long long)bswap32(s[1]) << 32) | bswap32(s[0]);
    key_out[1] = ((unsigned long long)bswap32(s[3]) << 32) | bswap32(s[2]);
}

extern "C" __global__ void round_key(const uint8_t* __restrict__ seed, uint32_t round_index,
                                     const uint8_t* __restrict__ prev_root,
                                     unsigned long long* __restrict__ key_out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    round_key_of('1', seed, round_index, prev_root, key_out);
}

extern "C" __global__ void round_key_v2(const uint8_t* __restrict__ seed, uint32_t round_index,
                                        const uint8_t* __restrict__ prev_root,
                                        unsigned long long* __restrict__ key_out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    round_key_of('2', seed, round_index, prev_root, key_out);
}

// ------------------------------------------------------------------------------------------------
// gen_nibbles: Philox4x64-10 as NumPy's np.random.Philox: block b of the stream is the cipher of the
// 256-bit counter b+1 (NumPy increments before generating). One thread per block: 4 words, 64 values.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t nibbles_to_int8(uint32_t v) {
    // v holds four nibbles, one per byte. nibble - 8 in 4-bit two's complement is nibble ^ 8; then
    // sign-extend bit 3 into the high nibble (0x08 * 0x1e == 0xf0, no carry between bytes).
    uint32_t t = v ^ 0x08080808u;
    return t | ((t & 0x08080808u) * 0x1eu);
}

__device__ __forceinline__ uint4 word_to_values(unsigned long long x) {
    uint32_t lo = (uint32_t)x, hi = (uint32_t)(x >> 32);
    uint32_t lo_l = lo & 0x0f0f0f0fu, lo_h = (lo >> 4) & 0x0f0f0f0fu;
    uint32_t hi_l = hi & 0x0f0f0f0fu, hi_h = (hi >> 4) & 0x0f0f0f0fu;
    uint4 out;  // bytes in stream order: low nibble then high nibble of each byte
    out.x = nibbles_to_int8(__byte_perm(lo_l, lo_h, 0x5140));
    out.y = nibbles_to_int8(__byte_perm(lo_l, lo_h, 0x7362));
    out.z = nibbles_to_int8(__byte_perm(hi_l, hi_h, 0x5140));
    out.w = nibbles_to_int8(__byte_perm(hi_l, hi_h, 0x7362));
    return out;
}

// GP_GEN_SMEM 1 (default, measured 1.7x faster on an H200): stage each block's 16 KiB of output in shared memory and write it back with
// consecutive lanes on consecutive 16-byte words (fully coalesced); 0: each thread stores its own 64 bytes.
#ifndef GP_GEN_SMEM
#define GP_GEN_SMEM 1
#endif
#define GEN_THREADS 256

__device__ __forceinline__ void philox4x64_10(unsigned long long block_index, unsigned long long key0,
                                              unsigned long long key1, unsigned long long out[4]) {
    const unsigned long long M0 = 0xD2E7470EE14C6C93ull, M1 = 0xCA5A826395121157ull;
    const unsigned long long W0 = 0x9E3779B97F4A7C15ull, W1 = 0xBB67AE8584CAA73Bull;
    unsigned long long c0 = block_index + 1, c1 = (c0 == 0) ? 1ull : 0ull, c2 = 0, c3 = 0;
    unsigned long long k0 = key0, k1 = key1;
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        unsigned long long hi0 = __umul64hi(M0, c0), lo0 = M0 * c0;
        unsigned long long hi1 = __umul64hi(M1, c2), lo1 = M1 * c2;
        unsigned long long n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        k0 += W0; k1 += W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

extern "C" __global__ void __launch_bounds__(GEN_THREADS)
gen_nibbles(uint4* __restrict__ out, const unsigned long long* __restrict__ key,
            unsigned long long first_block, unsigned long long n_blocks) {
    const unsigned long long key0 = key[0], key1 = key[1];
#if GP_GEN_SMEM
    __shared__ uint4 stage[GEN_THREADS * 4];
    const unsigned long long tile0 = (unsigned long long)blockIdx.x * GEN_THREADS;
    if (tile0 >= n_blocks) return;
    const unsigned long long i = tile0 + threadIdx.x;
    if (i < n_blocks) {
        unsigned long long w[4];
        philox4x64_10(first_block + i, key0, key1, w);
#pragma unroll
        for (int j = 0; j < 4; ++j) {  // XOR swizzle: 2-way instead of 4-way bank conflicts
            stage[4 * threadIdx.x + (j ^ (threadIdx.x & 3))] = word_to_values(w[j]);
        }
    }
    __syncthreads();
    const unsigned long long tile_words =
        4 * ((n_blocks - tile0) < GEN_THREADS ? (n_blocks - tile0) : (unsigned long long)GEN_THREADS);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const unsigned int logical = threadIdx.x + j * GEN_THREADS;
        if (logical < tile_words) {
            const unsigned int owner = logical >> 2;
            out[4 * tile0 + logical] = stage[4 * owner + ((logical & 3) ^ (owner & 3))];
        }
    }
#else
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_blocks) return;
    unsigned long long w[4];
    philox4x64_10(first_block + i, key0, key1, w);
    uint4* dst = out + 4 * i;
    dst[0] = word_to_values(w[0]);
    dst[1] = word_to_values(w[1]);
    dst[2] = word_to_values(w[2]);
    dst[3] = word_to_values(w[3]);
#endif
}

// gen_bytes (spec v2): the same Philox4x64-10 stream, each little-endian byte of a raw word one int8 value
// (two's complement, so values in [-128, 127]): a block is 4 words, 32 values, and the bytes go out as
// they are. One thread per block, staged through shared memory like gen_nibbles (consecutive lanes on
// consecutive 16-byte words).
extern "C" __global__ void __launch_bounds__(GEN_THREADS)
gen_bytes(uint4* __restrict__ out, const unsigned long long* __restrict__ key,
          unsigned long long first_block, unsigned long long n_blocks) {
    const unsigned long long key0 = key[0], key1 = key[1];
#if GP_GEN_SMEM
    __shared__ uint4 stage[GEN_THREADS * 2];
    const unsigned long long tile0 = (unsigned long long)blockIdx.x * GEN_THREADS;
    if (tile0 >= n_blocks) return;
    const unsigned long long i = tile0 + threadIdx.x;
    if (i < n_blocks) {
        unsigned long long w[4];
        philox4x64_10(first_block + i, key0, key1, w);
        // XOR swizzle on the pair: a lane's two stores go to different halves of its neighbours' banks
        stage[2 * threadIdx.x + (0 ^ (threadIdx.x & 1))] =
            make_uint4((uint32_t)w[0], (uint32_t)(w[0] >> 32), (uint32_t)w[1], (uint32_t)(w[1] >> 32));
        stage[2 * threadIdx.x + (1 ^ (threadIdx.x & 1))] =
            make_uint4((uint32_t)w[2], (uint32_t)(w[2] >> 32), (uint32_t)w[3], (uint32_t)(w[3] >> 32));
    }
    __syncthreads();
    const unsigned long long tile_words =
        2 * ((n_blocks - tile0) < GEN_THREADS ? (n_blocks - tile0) : (unsigned long long)GEN_THREADS);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const unsigned int logical = threadIdx.x + j * GEN_THREADS;
        if (logical < tile_words) {
            const unsigned int owner = logical >> 1;
            out[2 * tile0 + logical] = stage[2 * owner + ((logical & 1) ^ (owner & 1))];
        }
    }
#else
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_blocks) return;
    unsigned long long w[4];
    philox4x64_10(first_block + i, key0, key1, w);
    out[2 * i] = make_uint4((uint32_t)w[0], (uint32_t)(w[0] >> 32), (uint32_t)w[1], (uint32_t)(w[1] >> 32));
    out[2 * i + 1] = make_uint4((uint32_t)w[2], (uint32_t)(w[2] >> 32), (uint32_t)w[3], (uint32_t)(w[3] >> 32));
#endif
}

// ------------------------------------------------------------------------------------------------
// Leaf hashing: SHA-256(0x00 || chunk) over 1 KiB chunks. A warp hashes 32 consecutive chunks, one per
// lane; each 64-byte step is loaded cooperatively (64 contiguous bytes per chunk, fully used sectors)
// through shared memory, and the next step's loads are in flight while the current step is compressed.
// ------------------------------------------------------------------------------------------------
#define LEAF_WARPS 4
#define LEAF_THREADS (LEAF_WARPS * 32)
#define STAGE_STRIDE 5  // uint4 per staged row: 4 used + 1 pad, no bank conflicts on the row reads

__device__ __forceinline__ void hash_leaves_of_warp(const uint4* __restrict__ data, unsigned long long n_chunks,
                                                    uint4* __restrict__ out, uint4* my_stage,
                                                    unsigned long long chunk0, int lane) {
    uint4 pre[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const int u = q * 32 + lane, c = u >> 2, p = u & 3;
        pre[q] = (chunk0 + c < n_chunks) ? __ldg(data + (chunk0 + c) * 64 + p) : make_uint4(0, 0, 0, 0);
    }
    uint32_t s[8], w[16];
    sha256_init(s);
    uint32_t carry = 0;  // byte 3 of this word is the message byte before the current step: 0x00 first
#pragma unroll 1
    for (int j = 0; j < 16; ++j) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int u = q * 32 + lane, c = u >> 2, p = u & 3;
            my_stage[c * STAGE_STRIDE + p] = pre[q];
        }
        __syncwarp();
        uint4 v0 = my_stage[lane * STAGE_STRIDE + 0], v1 = my_stage[lane * STAGE_STRIDE + 1];
        uint4 v2 = my_stage[lane * STAGE_STRIDE + 2], v3 = my_stage[lane * STAGE_STRIDE + 3];
        __syncwarp();
        if (j < 15) {
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int u = q * 32 + lane, c = u >> 2, p = u & 3;
                pre[q] = (chunk0 + c < n_chunks) ? __ldg(data + (chunk0 + c) * 64 + (j + 1) * 4 + p)
                                                 : make_uint4(0, 0, 0, 0);
            }
        }
        const uint32_t x[16] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w,
                                v2.x, v2.y, v2.z, v2.w, v3.x, v3.y, v3.z, v3.w};
        w[0] = shifted_word(carry, x[0]);
#pragma unroll
        for (int t = 1; t < 16; ++t) w[t] = shifted_word(x[t - 1], x[t]);
        carry = x[15];
        sha256_compress<GP_LEAF_FMA>(s, w);
    }
    // Final block: the chunk's last byte, 0x80, zeros, length 1025 * 8 bits.
    w[0] = (carry & 0xff000000u) | 0x00800000u;
#pragma unroll
    for (int t = 1; t < 15; ++t) w[t] = 0;
    w[15] = 1025 * 8;
    sha256_compress<GP_LEAF_FMA>(s, w);

    const unsigned long long mine = chunk0 + lane;
    if (mine < n_chunks) {
        out[2 * mine] = make_uint4(bswap32(s[0]), bswap32(s[1]), bswap32(s[2]), bswap32(s[3]));
        out[2 * mine + 1] = make_uint4(bswap32(s[4]), bswap32(s[5]), bswap32(s[6]), bswap32(s[7]));
    }
}

// leaf_hash_1k: leaf hashes only (32 digest bytes per chunk into `out`). GP_LEAF_MIN_BLOCKS asks ptxas
// for that many resident blocks per SM (fewer registers each), for bench/kernel_variants.py.
#ifdef GP_LEAF_MIN_BLOCKS
#define LEAF_BOUNDS __launch_bounds__(LEAF_THREADS, GP_LEAF_MIN_BLOCKS)
#else
#define LEAF_BOUNDS __launch_bounds__(LEAF_THREADS)
#endif
extern "C" __global__ void LEAF_BOUNDS
leaf_hash_1k(const uint4* __restrict__ data, unsigned long long n_chunks, uint4* __restrict__ out) {
    __shared__ uint4 stage[LEAF_WARPS][32 * STAGE_STRIDE];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned long long chunk0 = ((unsigned long long)blockIdx.x * LEAF_WARPS + warp) * 32;
    if (chunk0 >= n_chunks) return;  // the whole warp leaves together
    hash_leaves_of_warp(data, n_chunks, out, stage[warp], chunk0, lane);
}

// ------------------------------------------------------------------------------------------------
// RFC 6962 interior levels. `levels` holds level 0 (n0 leaf hashes), then level 1 (ceil(n0/2)), and so
// on; a lone last node of a level is promoted unchanged, which gives RFC 6962's tree shape. A group is
// 512 aligned nodes of one level, reduced by one block through up to 9 levels; aligned groups pair
// exactly the nodes the global level pairs, so groups need no knowledge of each other.
// ------------------------------------------------------------------------------------------------
#define GROUP_NODES 512
#define GROUP_LEVELS 9
#define LEVEL_THREADS 256

__device__ __forceinline__ void load_hash_cg(const uint32_t* p, uint32_t h[8]) {
    // L2 loads (bypassing L1): the hashes were written by other blocks, by an earlier launch.
    uint4 a = __ldcg(reinterpret_cast<const uint4*>(p)), b = __ldcg(reinterpret_cast<const uint4*>(p + 4));
    h[0] = a.x; h[1] = a.y; h[2] = a.z; h[3] = a.w; h[4] = b.x; h[5] = b.y; h[6] = b.z; h[7] = b.w;
}

__device__ __forceinline__ void store_hash(uint32_t* p, const uint32_t h[8]) {
    *reinterpret_cast<uint4*>(p) = make_uint4(h[0], h[1], h[2], h[3]);
    *reinterpret_cast<uint4*>(p + 4) = make_uint4(h[4], h[5], h[6], h[7]);
}

// Reduce the nodes [lo, min(lo + 512, end)) of level `start_level` through `num_levels` (<= 9) levels,
// writing every node. lo must be a multiple of 2**num_levels, and end a multiple of it or the level's
// end, so that the pairs are the global level's pairs. Needs blockDim.x >= 128 and every thread of the
// block; the last node computed is left in buf[0].
__device__ void reduce_group(uint32_t* __restrict__ levels, unsigned long long n0, int start_level,
                             int num_levels, unsigned long long lo, unsigned long long end,
                             uint32_t (*buf)[9]) {
    unsigned long long size = n0, off = 0;
    for (int l = 0; l < start_level; ++l) { off += size; size = (size + 1) >> 1; }
    const unsigned long long rem = end - lo;
    int count = rem < GROUP_NODES ? (int)rem : GROUP_NODES;
    const int t = threadIdx.x;

    // First level: pairs read from global memory, any number per thread.
    unsigned long long out_off = off + size, out_size = (size + 1) >> 1, out_lo = lo >> 1;
    int next = (count + 1) >> 1;
#pragma unroll 1
    for (int p = t; p < next; p += blockDim.x) {
        uint32_t h[8];
        if (2 * p + 1 < count) {
            uint32_t x[16];
            load_hash_cg(levels + (off + lo + 2 * p) * 8, x);
            load_hash_cg(levels + (off + lo + 2 * p + 1) * 8, x + 8);
            node_hash_words(x, h);
        } else {
            load_hash_cg(levels + (off + lo + 2 * p) * 8, h);
        }
        store_hash(levels + (out_off + out_lo + p) * 8, h);
#pragma unroll
        for (int i = 0; i < 8; ++i) buf[p][i] = h[i];
    }
    count = next;
    // Further levels from shared memory: at most 128 nodes each, one per thread.
#pragma unroll 1
    for (int lev = 1; lev < num_levels; ++lev) {
        off = out_off; size = out_size;
        out_off = off + size; out_size = (size + 1) >> 1; out_lo >>= 1;
        next = (count + 1) >> 1;
        __syncthreads();
        uint32_t h[8];
        if (2 * t + 1 < count) {
            uint32_t x[16];
#pragma unroll
            for (int i = 0; i < 8; ++i) { x[i] = buf[2 * t][i]; x[8 + i] = buf[2 * t + 1][i]; }
            node_hash_words(x, h);
        } else if (2 * t < count) {
#pragma unroll
            for (int i = 0; i < 8; ++i) h[i] = buf[2 * t][i];
        }
        __syncthreads();
        if (t < next) {
            store_hash(levels + (out_off + out_lo + t) * 8, h);
#pragma unroll
            for (int i = 0; i < 8; ++i) buf[t][i] = h[i];
        }
        count = next;
    }
    __syncthreads();
}

// merkle_levels: levels start_level+1 .. start_level+num_levels above the nodes [first_node, end_node)
// of level start_level (end_node is clipped to the level's size), in a level buffer whose level 0 is
// already filled; one block per 512 nodes of the range. first_node must be a multiple of
// 2**num_levels, and end_node a multiple of it or the level's end (kernels/cuda_plan.py plans the
// ranges: the whole level, or one piece of a pipelined round). When the range is the whole level, the
// last level computed is the root and root_out is not null, the root is also written there (the round
// chain's roots array).
extern "C" __global__ void __launch_bounds__(LEVEL_THREADS)
merkle_levels(uint32_t* __restrict__ levels, unsigned long long n0, int start_level, int num_levels,
              unsigned long long first_node, unsigned long long end_node, uint32_t* __restrict__ root_out) {
    __shared__ uint32_t buf[GROUP_NODES / 2][9];  // 9 words per hash: conflict-free column access
    unsigned long long size = n0;
    for (int l = 0; l < start_level; ++l) size = (size + 1) >> 1;
    if (end_node > size) end_node = size;
    const unsigned long long lo = first_node + (unsigned long long)blockIdx.x * GROUP_NODES;
    if (lo >= end_node) return;
    reduce_group(levels, n0, start_level, num_levels, lo, end_node, buf);
    unsigned long long top = size;
    for (int l = 0; l < num_levels; ++l) top = (top + 1) >> 1;
    const bool whole = first_node == 0 && end_node == size;
    if (root_out != nullptr && whole && top == 1 && threadIdx.x < 8) root_out[threadIdx.x] = buf[0][threadIdx.x];
}

// copy_hash: dst[0..32) = src[0..32). Keeps the round chain on the device (root_r -> roots[r]).
extern "C" __global__ void copy_hash(const uint32_t* __restrict__ src, uint32_t* __restrict__ dst) {
    if (threadIdx.x < 8) dst[threadIdx.x] = src[threadIdx.x];
}
