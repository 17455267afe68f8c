// gpuproof/1 CUDA kernels (docs/protocol.md, "Spec v1"). The NumPy reference in kernels/reference.py is
// normative: every kernel here must give byte-identical output, which bench/device_check.py and
// tests/kernels/test_cuda.py check.
//
// Entry points (extern "C", compiled once per device with cupy.RawModule):
//   round_key      rs_r = SHA-256("gpuproof.round.v1" || seed || u32le(r) || prev_root); key words of A_r
//   gen_nibbles    Philox4x64-10 nibble stream -> int8 matrix, from any Philox block
//   leaf_hash_1k   SHA-256(0x00 || chunk) over 1 KiB chunks
//   merkle_levels  RFC 6962 interior levels, up to 9 levels per launch, every level kept
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

__device__ __forceinline__ void sha256_compress(uint32_t s[8], uint32_t w[16]) {
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
#pragma unroll
    for (int i = 0; i < 64; ++i) {
        uint32_t wi;
        if (i < 16) {
            wi = w[i];
        } else {
            uint32_t w2 = w[(i - 2) & 15], w15 = w[(i - 15) & 15];
            uint32_t s0 = rotr32(w15, 7) ^ rotr32(w15, 18) ^ (w15 >> 3);
            uint32_t s1 = rotr32(w2, 17) ^ rotr32(w2, 19) ^ (w2 >> 10);
            wi = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
            w[i & 15] = wi;
        }
        uint32_t t1 = h + (rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + wi;
        uint32_t t2 = (rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22)) + ((a & b) | (c & (a | b)));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
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
    sha256_compress(s, w);
    w[0] = (x[15] & 0xff000000u) | 0x00800000u;  // last byte of right, then the 0x80 pad byte
#pragma unroll
    for (int t = 1; t < 15; ++t) w[t] = 0;
    w[15] = 65 * 8;
    sha256_compress(s, w);
#pragma unroll
    for (int t = 0; t < 8; ++t) out_le[t] = bswap32(s[t]);  // digest bytes, as little-endian words
}

// ------------------------------------------------------------------------------------------------
// round_key: one thread. seed and prev_root are 32 bytes; key_out gets the two little-endian uint64
// Philox key words of A_r (the first 16 bytes of rs_r).
// ------------------------------------------------------------------------------------------------
extern "C" __global__ void round_key(const uint8_t* __restrict__ seed, uint32_t round_index,
                                     const uint8_t* __restrict__ prev_root,
                                     unsigned long long* __restrict__ key_out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const char domain[17] = {'g', 'p', 'u', 'p', 'r', 'o', 'o', 'f', '.', 'r', 'o', 'u', 'n', 'd', '.', 'v', '1'};
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
        sha256_compress(s, w);
    }
    key_out[0] = ((unsigned long long)bswap32(s[1]) << 32) | bswap32(s[0]);
    key_out[1] = ((unsigned long long)bswap32(s[3]) << 32) | bswap32(s[2]);
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

extern "C" __global__ void __launch_bounds__(256)
gen_nibbles(uint4* __restrict__ out, const unsigned long long* __restrict__ key,
            unsigned long long first_block, unsigned long long n_blocks) {
    const unsigned long long M0 = 0xD2E7470EE14C6C93ull, M1 = 0xCA5A826395121157ull;
    const unsigned long long W0 = 0x9E3779B97F4A7C15ull, W1 = 0xBB67AE8584CAA73Bull;
    const unsigned long long key0 = key[0], key1 = key[1];
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n_blocks;
         i += stride) {
        unsigned long long base = first_block + i;
        unsigned long long c0 = base + 1, c1 = (c0 == 0) ? 1ull : 0ull, c2 = 0, c3 = 0;
        unsigned long long k0 = key0, k1 = key1;
#pragma unroll
        for (int r = 0; r < 10; ++r) {
            unsigned long long hi0 = __umul64hi(M0, c0), lo0 = M0 * c0;
            unsigned long long hi1 = __umul64hi(M1, c2), lo1 = M1 * c2;
            unsigned long long n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
            c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
            k0 += W0; k1 += W1;
        }
        uint4* dst = out + 4 * i;
        dst[0] = word_to_values(c0);
        dst[1] = word_to_values(c1);
        dst[2] = word_to_values(c2);
        dst[3] = word_to_values(c3);
    }
}

// ------------------------------------------------------------------------------------------------
// leaf_hash_1k: SHA-256(0x00 || chunk) for n_chunks consecutive 1 KiB chunks. A warp hashes 32
// consecutive chunks, one per lane; each 64-byte step is loaded cooperatively (64 contiguous bytes per
// chunk, fully used sectors) through shared memory, and the next step's loads are in flight while the
// current step is compressed. Output: 32 digest bytes per chunk.
// ------------------------------------------------------------------------------------------------
#define LEAF_WARPS 4
#define STAGE_STRIDE 5  // uint4 per staged row: 4 used + 1 pad, no bank conflicts on the row reads

extern "C" __global__ void __launch_bounds__(LEAF_WARPS * 32)
leaf_hash_1k(const uint4* __restrict__ data, unsigned long long n_chunks, uint4* __restrict__ out) {
    __shared__ uint4 stage[LEAF_WARPS][32 * STAGE_STRIDE];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned long long chunk0 = ((unsigned long long)blockIdx.x * LEAF_WARPS + warp) * 32;
    if (chunk0 >= n_chunks) return;  // the whole warp leaves together
    uint4* my_stage = stage[warp];

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
        sha256_compress(s, w);
    }
    // Final block: the chunk's last byte, 0x80, zeros, length 1025 * 8 bits.
    w[0] = (carry & 0xff000000u) | 0x00800000u;
#pragma unroll
    for (int t = 1; t < 15; ++t) w[t] = 0;
    w[15] = 1025 * 8;
    sha256_compress(s, w);

    const unsigned long long mine = chunk0 + lane;
    if (mine < n_chunks) {
        out[2 * mine] = make_uint4(bswap32(s[0]), bswap32(s[1]), bswap32(s[2]), bswap32(s[3]));
        out[2 * mine + 1] = make_uint4(bswap32(s[4]), bswap32(s[5]), bswap32(s[6]), bswap32(s[7]));
    }
}

// ------------------------------------------------------------------------------------------------
// merkle_levels: RFC 6962 levels start_level+1 .. start_level+num_levels (num_levels <= 9) over the
// level buffer `levels`, which holds level 0 (n0 leaf hashes), then level 1 (ceil(n0/2)), and so on.
// A lone last node of a level is promoted unchanged, which gives RFC 6962's tree shape. A block reduces
// 512 aligned nodes of the start level; aligned blocks pair exactly the nodes the global level pairs.
// ------------------------------------------------------------------------------------------------
#define LEVEL_THREADS 256

__device__ __forceinline__ void load_hash(const uint32_t* p, uint32_t h[8]) {
    uint4 a = *reinterpret_cast<const uint4*>(p), b = *reinterpret_cast<const uint4*>(p + 4);
    h[0] = a.x; h[1] = a.y; h[2] = a.z; h[3] = a.w; h[4] = b.x; h[5] = b.y; h[6] = b.z; h[7] = b.w;
}

__device__ __forceinline__ void store_hash(uint32_t* p, const uint32_t h[8]) {
    *reinterpret_cast<uint4*>(p) = make_uint4(h[0], h[1], h[2], h[3]);
    *reinterpret_cast<uint4*>(p + 4) = make_uint4(h[4], h[5], h[6], h[7]);
}

extern "C" __global__ void __launch_bounds__(LEVEL_THREADS)
merkle_levels(uint32_t* __restrict__ levels, unsigned long long n0, int start_level, int num_levels) {
    __shared__ uint32_t buf[LEVEL_THREADS][9];  // 9 words per hash: conflict-free column access
    unsigned long long size = n0, off = 0;
    for (int l = 0; l < start_level; ++l) { off += size; size = (size + 1) >> 1; }
    const unsigned long long lo = (unsigned long long)blockIdx.x * (2 * LEVEL_THREADS);
    if (lo >= size) return;
    const int t = threadIdx.x;
    unsigned long long rem = size - lo;
    int count = rem < 2 * LEVEL_THREADS ? (int)rem : 2 * LEVEL_THREADS;

    // First level: read pairs from global memory.
    unsigned long long out_off = off + size, out_size = (size + 1) >> 1, out_lo = lo >> 1;
    uint32_t h[8];
    if (2 * t + 1 < count) {
        uint32_t x[16];
        load_hash(levels + (off + lo + 2 * t) * 8, x);
        load_hash(levels + (off + lo + 2 * t + 1) * 8, x + 8);
        node_hash_words(x, h);
    } else if (2 * t < count) {
        load_hash(levels + (off + lo + 2 * t) * 8, h);
    }
    count = (count + 1) >> 1;
    if (t < count) {
        store_hash(levels + (out_off + out_lo + t) * 8, h);
#pragma unroll
        for (int i = 0; i < 8; ++i) buf[t][i] = h[i];
    }
    // Further levels from shared memory.
    for (int lev = 1; lev < num_levels; ++lev) {
        off = out_off; size = out_size;
        out_off = off + size; out_size = (size + 1) >> 1; out_lo >>= 1;
        __syncthreads();
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
        count = (count + 1) >> 1;
        if (t < count) {
            store_hash(levels + (out_off + out_lo + t) * 8, h);
#pragma unroll
            for (int i = 0; i < 8; ++i) buf[t][i] = h[i];
        }
    }
}

// copy_hash: dst[0..32) = src[0..32). Keeps the round chain on the device (root_r -> roots[r]).
extern "C" __global__ void copy_hash(const uint32_t* __restrict__ src, uint32_t* __restrict__ dst) {
    if (threadIdx.x < 8) dst[threadIdx.x] = src[threadIdx.x];
}
