// ISA levels and the per-level kernel table.
//
// Every kernel family is compiled once per ISA level in its own translation unit (flags set in CMakeLists.txt),
// each inside its own namespace so that no inline function compiled with wider instructions can be picked by the
// linker for a narrower level. The executor only ever calls kernels through a KernelTable.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

namespace tf {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512Vnni = 2 };

const char* isa_name(Isa isa);
bool isa_from_name(const std::string& name, Isa* out);
// Highest level this CPU (and OS, for the wider register state) supports.
Isa detect_isa();
// detect_isa() lowered by TRIMFORMER_ISA if set; a request above what the CPU has is an error (throws).
Isa resolve_isa(const std::string& requested);
// Whether the switch `name` is set in the environment to anything but empty or "0" (TRIMFORMER_NO_AMX and the like)
bool env_flag(const char* name);
// Whether the switch `name` is set to exactly "0" (switches on by default, turned off for A/B runs)
bool env_off(const char* name);
bool cpu_has_avx512_bf16();
// AVX512_VBMI2 (byte expand-loads); TRIMFORMER_NO_VBMI2=1 reports false (to test the portable kernels)
bool cpu_has_avx512_vbmi2();
// AVX512_VBMI (vpermb: any byte of a 64-byte vector to any lane); TRIMFORMER_NO_VBMI=1 reports false
bool cpu_has_avx512_vbmi();
// AMX-TILE + AMX-INT8 with the tile state granted by the OS (requested once); TRIMFORMER_NO_AMX=1 reports false.
// The avx512 level's INT8 GEMM then runs on tiles (same packing, bit-identical results).
bool cpu_has_amx_int8();
bool cpu_has_amx_bf16();  // AMX-BF16 tiles usable (needs what cpu_has_amx_int8 needs; TRIMFORMER_NO_AMX turns both off)
// An AVX-512 CPU that runs 512-bit FMAs as two 256-bit halves: AMD family 19h (Zen 4; the family's Zen 3 parts
// have no AVX-512), where the avx512 level takes the avx2 level's fused float attention (docs/kernels.md)
bool cpu_halves_512bit_fma();
// an Intel CPU (CPUID vendor "GenuineIntel"): kernel rules measured only there
bool cpu_is_intel();

enum class Act : int { None = 0, GeluErf = 1, GeluTanh = 2, Relu = 3, Tanh = 4 };

// f(std::integral_constant<Act, a>()) for the activation a known at run time: how a kernel picks its form
// specialised on the activation (each form's f must return the same type, e.g. a function pointer)
template <class F>
decltype(auto) with_act(Act a, F&& f) {
  switch (a) {
    case Act::GeluErf: return f(std::integral_constant<Act, Act::GeluErf>());
    case Act::GeluTanh: return f(std::integral_constant<Act, Act::GeluTanh>());
    case Act::Relu: return f(std::integral_constant<Act, Act::Relu>());
    case Act::Tanh: return f(std::integral_constant<Act, Act::Tanh>());
    case Act::None: break;
  }
  return f(std::integral_constant<Act, Act::None>());
}

// The BF16 attention's operands as a block-sparse QKV writes them (Epilogue::qkv): Q as bf16 token rows (heads *
// head_dim apart) and each (sequence, head)'s K and V packed as gemm_bf16's B operand (pack_bf16_nk_f32's and
// pack_bf16_kn's layouts), kv_bytes apart, sequence-major. A call's token 0 is token token0 of those sequences;
// head_dim and seq are multiples of 16.
struct QkvBf16 {
  uint16_t* q = nullptr;  // null: not in use
  char* k = nullptr;
  char* v = nullptr;
  int64_t kv_bytes = 0, seq = 0, heads = 0, head_dim = 0, token0 = 0;
};
// The INT8 attention's Q, K and V as a block-sparse QKV writes them (Epilogue::qkv_s8), per (sequence b, head h) at
// head = b * heads + h: Q's u8 rows [seq][head_dim] at q + head * seq * head_dim with their quantize_rows_u8 scale
// and zero point at q_scale / q_zp + head * seq; K packed as gemm_s8's B operand (pack_s8's layout, seq keys x
// head_dim inputs) at k + head * k_bytes with its quantize_rows_s8 scale and integer sum per key at k_scale /
// k_sum + head * seq. The same bytes and floats as the attention's own quantization of the float rows. V's floats
// go out channel-major, [head_dim][seq] at vt + head * head_dim * seq (no transpose back to token rows; the
// attention quantizes and packs those rows by channel). seq is a multiple of 64 and head_dim of 16, at most 64;
// every call covers whole heads. A call's token 0 is token token0 of the sequences.
struct QkvS8 {
  uint8_t* q = nullptr;  // null: not in use
  float* q_scale = nullptr;
  float* q_zp = nullptr;
  int8_t* k = nullptr;
  float* k_scale = nullptr;
  int32_t* k_sum = nullptr;
  float* vt = nullptr;
  int64_t k_bytes = 0, seq = 0, heads = 0, head_dim = 0, token0 = 0;
  float* head_rows = nullptr;  // (set by gemm_bsr_s8: its buffer of a head's rows, [64][64] floats)
};
// A sparse FP32 QKV's output as the fused float attention's operands (KernelTable::attention_f32_packed), per
// (sequence b, head h) at base + (b * heads + h) * 3 * seq * head_dim floats: Q's rows [seq][head_dim], then K in
// panels of 16 keys [seq/16][head_dim][16], then V in panels of 16 channels [head_dim/16][seq][16] (seq and
// head_dim multiples of 16). token0: the call's first token within the sequences.
struct QkvF32 {
  float* base = nullptr;  // null: not in use
  int64_t seq = 0, heads = 0, head_dim = 0, token0 = 0;
};

// What happens to a GEMM tile after accumulation, applied while the tile is hot in cache:
//   v = alpha * acc (fp32) or a_scale * w_scale[n] * (acc - a_zp * col_sum[n]) (int8)
//   v += bias[n];  v = act(v);  v += residual[m, n];  store fp32 to C  (and/or u8 quantized to out_u8)
struct Epilogue {
  float alpha = 1.0f;
  const float* bias = nullptr;
  Act act = Act::None;
  const float* residual = nullptr;
  int64_t ld_residual = 0;
  // int8 dequantization
  const float* w_scale = nullptr;
  const int32_t* col_sum = nullptr;
  // per-row activation scale and zero point (indexed by the global row m; a per-tensor scheme repeats one value)
  const float* row_scale = nullptr;
  const float* row_zp = nullptr;
  // requantization (INT8 GEMM only): if set, the finished tile is quantized with this static scale / zero point
  // into out_u8 instead of being stored as float, so the next INT8 layer reads it directly
  uint8_t* out_u8 = nullptr;
  int64_t ld_out_u8 = 0;
  float out_inv_scale = 1.0f;
  int32_t out_zp = 0;
  // (gemm_bsr_s8 at a level with a re-layout, requantizing without a residual, act None / GeluErf / Relu: see
  // bsr_fills_next_at) the requantized bytes go straight into the next block-sparse layer's re-layout, out_at
  // (bsr_pack_at's layout for k = out_at_k, this call's token 0 at out_at), instead of out_u8's rows
  uint8_t* out_at = nullptr;
  int64_t out_at_k = 0;
  bool out_at_pairs = false;  // the next layer takes its re-layout pair-major (BsrS8::pair_quads)
  bool out_at_bytes = false;  // ... or as byte rows (gathered quads: KernelTable::bsr_pack_bytes' layout)
  // (gemm_spf32 / gemm_nm_f32 where KernelTable::spf32_fills_next_at, no residual) the finished rows of each Y^T
  // tile (alpha, bias, activation applied) go straight into the next sparse FP32 layer's re-layout, out_at_f32
  // (spf32_pack_at's layout for k = out_at_f32_k, this call's token 0 at out_at_f32), instead of float rows of c
  float* out_at_f32 = nullptr;
  int64_t out_at_f32_k = 0;
  // (gemm_bsr_s8 at the avx512 level, QKV before BF16 attention) with qkv.q set: the attention's bf16 operands
  // instead of float rows
  QkvBf16 qkv;
  // (gemm_bsr_s8 at the avx512 level, QKV before INT8 attention) with qkv_s8.q set: Q's and K's quantized operands
  // and V's floats by channel instead of float rows
  QkvS8 qkv_s8;
  // (gemm_spf32 / gemm_nm_f32 at levels with attention_f32_packed, QKV before the fused float attention) with
  // qkv_f32.base set: the attention's operands instead of float rows of c
  QkvF32 qkv_f32;
  // (gemm_bsr_s8 at the avx512 level, 4x4 blocks) token vectors of 16 per tile, 1, 2 or 4; else the kernel's rule.
  // For A/B runs (EncoderEngine: TRIMFORMER_BSR_TILE_VECS)
  int tile_vecs = 0;
  // (gemm_bsr_s8 at the avx512 level) the pieces' transposes back to token rows as transpose16 over registers
  // instead of load_transposed16 from the tile (A/B runs: TRIMFORMER_BSR_TRANSPOSE16)
  bool bsr_transpose16 = false;
  // (gemm_bsr_s8 at the avx512 level) 2 token vectors for every row-piece tile on calls of 3 to 8 At tiles, as
  // before the rule kept 4 for tiles without a residual on Intel cores (A/B runs: TRIMFORMER_BSR_PIECES_V2)
  bool bsr_pieces_v2 = false;
  // (gemm_bsr_s8 at the avx512 level) float rows of c as streaming stores, where c's rows and the call's first
  // column lie on 64-byte lines: set by the executor for Linears whose whole float output reaches
  // kStreamOutputBytes (EncoderEngine)
  bool stream_out = false;
};

// A Linear's float output of at least this many bytes is written by streaming stores where a kernel has them
// (Epilogue::stream_out): through the caches each line is first read for ownership, twice the bytes of memory
// traffic, and an output this large is not read back from cache anyway. Under it the output is written through
// the caches, as the LayerNorm after a BERT-base attention output (768-token groups: 2.25 MiB) reads it right back.
constexpr int64_t kStreamOutputBytes = int64_t{4} << 20;

// The attention's float scores per chunk of query rows (the encoder's INT8 and unfused float attention,
// EncoderEngine::attention_rows; the decoder's prefill, DecoderEngine::attention_chunk_rows): small enough to stay
// in L2 between the score GEMM, the softmax and P.V (1.25 MiB per core on the Ice Lake Xeon where it was measured)
constexpr int64_t kAttnScoreBytes = int64_t{192} << 10;

// Packed FP32 weight panel for one ISA: opaque to the executor, sized by the packer.
struct PackedF32 {
  float* data = nullptr;
  int64_t n = 0, k = 0;
};
// Packed INT8 weights for one ISA (layout private to that ISA's kernels).
struct PackedS8 {
  void* data = nullptr;
  int64_t n = 0, k = 0;
  int32_t* col_sum = nullptr;  // sum_k w[n, k], for the activation zero point
};

// Token alignment of the sparse FP32 kernels' activation re-layout (spf32_pack_at): a level's tiles hold
// kSparseAtTile tokens (or a divisor of it), tile after tile, so the tokens from an aligned m0 on are the
// re-layout of a call of their own, and the executor can hand each thread a range of tokens
constexpr int64_t kSparseAtTile = 128;
// The same for the block-sparse INT8 re-layout (bsr_pack_at): tiles of a level's KernelTable::bsr_at_tile tokens
// (a divisor of kBsrAtTile), round4(k) bytes per token, each token's input quad 4 bytes within a tile's quad row of
// 4 * tile bytes. The avx512 level's tile is kBsrAtTile = 64 tokens, one thread's share of a
// 128-token sequence, so that share is one contiguous tile: with 128-token tiles a thread's 64 tokens were half of
// every 512-byte quad row, and its slice of At (48 KiB at K = 768) sat on half of L1's sets
// (bench/results/profile_block90_int8_attile64.md, _attile64_1x4.md)
constexpr int64_t kBsrAtTile = 64;
// Where a re-layout of `tile`-token tiles holds token m0 (a multiple of 16): a call of its own may start there if
// it ends within that tile; from a tile-aligned m0 it may run on across tiles. (m0 * round4(k) when m0 is aligned.)
inline int64_t bsr_at_offset(int64_t m0, int64_t k, int64_t tile) {
  return (m0 / tile) * tile * ((k + 3) / 4 * 4) + (m0 % tile) * 4;
}
// Pair records (BsrS8::pair_slots, the avx2 level's unstructured and 2:4 INT8): the re-layout (bsr_pack_pairs)
// holds, per tile of kPairAtTile tokens, one 64-byte record slot for each input quad g and slot s (index
// g * slots + s): the two inputs kPairSlots[s] = (i, j) of the quad for each of the tile's 32 tokens, 2 bytes per
// token. The first two slots split a quad in halves (unstructured pairs); all six cover any two of its inputs (2:4).
// A 32-token pass reads one line per record (kernel: 16 bytes zero-extend to 8 tokens' pairs as words), so the
// re-layout's traffic from L2 (FFN2's 3072 inputs or any 6-slot re-layout leave L1) is half a byte per input and token.
constexpr int kPairSlots[6][2] = {{0, 1}, {2, 3}, {0, 2}, {0, 3}, {1, 2}, {1, 3}};
constexpr int64_t kPairAtTile = 32;
// where the pair re-layout of k inputs holds token m0 (a multiple of 8), and its bytes for m tokens
inline int64_t bsr_pairs_at_offset(int64_t m0, int64_t k, int64_t slots) {
  return (m0 / kPairAtTile) * kPairAtTile * ((k + 3) / 4) * slots * 2 + (m0 % kPairAtTile) * 2;
}
inline size_t bsr_pairs_at_size(int64_t m, int64_t k, int64_t slots) {
  return static_cast<size_t>((m + kPairAtTile - 1) / kPairAtTile * kPairAtTile * ((k + 3) / 4) * slots * 2 + 64);
}
// Whether a block-sparse INT8 layer with this activation can write the next block-sparse layer's re-layout
// itself (Epilogue::out_at): its tile is then finished while the tokens run along the lanes, four output rows per
// register, which is one quad row of the next layer's re-layout
inline bool bsr_fills_next_at(Act act) { return act == Act::None || act == Act::GeluErf || act == Act::Relu; }

// Block-sparse INT8 weight with R x 4 blocks (R = block_rows consecutive output rows x 4 consecutive input
// features; R is 1 or 4): row block b (rows R*b .. R*b+R-1) owns blocks rowptr[b] .. rowptr[b+1]-1; block j covers
// inputs 4*cols[j] .. 4*cols[j]+3 and holds R x 4 bytes at values[4R*j ..] (row-major: output row, then input).
// INT8 weights as permuted quads (gemm_perm_s8; built by EncoderEngine::build_perm_quads): output rows in panels
// of kPermPanel, inputs in chunks of kPermChunk. Each (panel, chunk) has `steps` steps of 256 bytes: for each of
// the panel's two 16-row tiles, 64 index bytes then 64 int8 codes, lane l's 4 bytes holding 4 of row
// (16 tile + l)'s non-zeros in the chunk (code 0 where the row has fewer) and the index bytes which of the chunk's
// inputs each multiplies. A panel's steps are the most any of its rows needs (a row's non-zeros / 4, rounded up).
constexpr int64_t kPermPanel = 32;
constexpr int64_t kPermChunk = 64;
struct PermS8 {
  int64_t n = 0, k = 0;
  const uint8_t* records = nullptr;
  const int64_t* panel_off = nullptr;  // byte offset of each panel's records
  const uint8_t* steps = nullptr;      // [panel][chunk]
};

struct BsrS8 {
  int64_t n = 0, k = 0;
  int64_t block_rows = 1;
  const int32_t* rowptr = nullptr;
  const int32_t* cols = nullptr;
  const int8_t* values = nullptr;
  // the same values widened to 16 bits, in the same order: set (and values unset) for levels whose kernel wants
  // them (KernelTable::bsr_wide_values)
  const int16_t* values16 = nullptr;
  const int32_t* col_sum = nullptr;  // per output row: sum of its weights (for the activation zero point)
  const float* w_scale = nullptr;    // per output row
  // 0: blocks as above over bsr_pack_at's re-layout. 2 or 6 (block_rows 1, levels with bsr_pack_pairs): row r owns
  // pair records rowptr[r] .. rowptr[r+1]-1 over bsr_pack_pairs' re-layout with this many slots per quad; record
  // j reads its slot, quad cols[j] = g * slots + s of that re-layout, and holds the two weights at values16[2j],
  // values16[2j+1]
  int64_t pair_slots = 0;
  // (4x4 blocks, levels with KernelTable::bsr_narrow_values) every value lies in [-64, 64] and `values` is set: the
  // kernel multiplies u8 activations by the 8-bit values directly (vpmaddubsw cannot saturate at this range)
  bool narrow = false;
  // (bsr_pair_quads: 4x4 blocks of 16-bit weights, short rows, at avx2) the re-layout holds each tile's quads
  // pair-major (bsr_pack_at's pair_quads) and the kernel runs 16-token passes over it
  bool pair_quads = false;
  // Row pairs (1x4 blocks at levels with KernelTable::bsr_row_pairs_max_quads, rows of fewer quads; set, the
  // kernel reads these instead of rowptr / cols / values, which the loader then drops): the rows of every 16-row
  // tile (rows 16i .. 16i+15) matched in pairs, and each pair's quads in three lists: those both rows hold (one
  // At load per token vector feeds both rows' products), then row a's own, then row b's own. Tile i's pairs are
  // pair_tile[i] .. pair_tile[i+1]-1; pair t's lists end at pair_ptr[3t+1], [3t+2], [3t+3] (starting at
  // pair_ptr[3t]); its rows within the tile are pair_rows[t] & 0xff and >> 8 (0xff: row a has no partner); its
  // entries' quads are pair_cols[j] and its values start at pair_values + pair_voff[t]: 8 bytes per shared entry
  // (a's quad, then b's), 4 per own entry.
  const int32_t* pair_tile = nullptr;
  const int32_t* pair_ptr = nullptr;
  const uint16_t* pair_rows = nullptr;
  const int32_t* pair_cols = nullptr;
  const int8_t* pair_values = nullptr;
  const int32_t* pair_voff = nullptr;
  // Gathered quads (1x4 rows at levels with KernelTable::bsr_pack_bytes, where the loader finds the quads sparse
  // enough; set, the kernel reads these and bsr_pack_bytes' re-layout instead of the quads and bsr_pack_at's): row
  // r's non-zeros in groups of four of any inputs, in input order, the last group padded with zero weights; its
  // groups are gq_ptr[r] .. gq_ptr[r+1]-1, group j's inputs gq_inputs[4j .. 4j+3] and its weights the 4 bytes at
  // gq_values + 4j. The kernel interleaves the four inputs' activation bytes into VNNI quads at run time.
  const int32_t* gq_ptr = nullptr;
  const uint16_t* gq_inputs = nullptr;
  const int8_t* gq_values = nullptr;
};
// Whether every value of a block-sparse INT8 weight lies in [-64, 64] (BsrS8::narrow's condition): the loader and
// the test bindings decide the kernel from the values themselves
inline bool bsr_values_narrow(const int8_t* v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (v[i] < -64 || v[i] > 64) return false;
  return true;
}

// ---- sparse runtime (issue 3): FP32 sparse weights ----
// csr-f32 as generated code (JitF32Code builds it at load, gemm_spf32 runs it where KernelTable::spf32_jit): one
// function per group of at most kJitRows output rows, called as f(at, values, yt) (the SysV argument registers):
// `at` a 16-token quarter of a 64-token At tile (rows 256 bytes apart), `values` the group's values, `yt` its first
// Y^T row at that quarter (rows 256 bytes apart). The rows' accumulators stay in zmm0 .. zmm27; each input the
// group holds is loaded once (zmm28-31 in turn) and multiplied into every row holding it with the weight as an
// embedded broadcast; no index loads, no branches. Groups form blocks of whole 16-row units.
constexpr int64_t kJitRows = 28;
struct JitGroupF32 {
  int32_t row0 = 0, rows = 0;
  int64_t code_off = 0, value_off = 0;
};
struct SparseF32Jit {
  const uint8_t* code = nullptr;
  int64_t code_bytes = 0;
  const float* values = nullptr;
  const JitGroupF32* groups = nullptr;
  const int32_t* block_groups = nullptr;  // block b holds groups block_groups[b] .. block_groups[b + 1] - 1
  int64_t blocks = 0;
  int64_t max_block_rows = 0;
};
// Sparse FP32 weight in rows of R (R = block_rows: 1 for csr-f32, 4 for block-f32's 4x1 blocks): row block b
// (rows R*b .. R*b+R-1) owns entries rowptr[b] .. rowptr[b+1]-1; entry j is input feature cols[j] and holds R
// values at values[R*j ..] (one per output row of the block).
struct SparseF32 {
  int64_t n = 0, k = 0;
  int64_t block_rows = 1;
  const int32_t* rowptr = nullptr;
  const int32_t* cols = nullptr;
  const float* values = nullptr;
  // entries of row block b with input in chunk c (inputs c*chunk_k .. c*chunk_k+chunk_k-1) are
  // chunk_ptr[b * (chunks + 1) + c] .. chunk_ptr[b * (chunks + 1) + c + 1] - 1, chunks = ceil(k / chunk_k), for
  // levels whose kernel walks the inputs in chunks (KernelTable::spf32_chunk_k > 0; see build_chunk_pointers)
  int64_t chunk_k = 0;
  const int32_t* chunk_ptr = nullptr;
  const SparseF32Jit* jit = nullptr;  // csr-f32 as generated code (levels with KernelTable::spf32_jit)
};
// N:M semi-structured FP32 weight (at most N non-zeros in each group of M consecutive inputs, M in {4, 8}):
// row r keeps exactly N values per group (zeros where a group has fewer), values[r * groups * N + g * N + i]
// sits at input M*g + idx[same position]; groups = ceil(k / M), inputs past k multiply zeros.
struct NmF32 {
  int64_t n = 0, k = 0;
  int64_t keep = 2, group = 4;  // N, M
  const float* values = nullptr;
  const uint8_t* idx = nullptr;
};

struct KernelTable {
  Isa isa;
  // ---- FP32 GEMM: C[m, n] = epi(sum_k A[m, k] * B[k, n]) ----
  // bytes needed to pack an [n x k] matrix
  size_t (*pack_f32_size)(int64_t n, int64_t k);
  // pack from B stored as W[n][k] (Linear weight; also K in Q.K^T) with row stride ldw
  void (*pack_f32_nk)(const float* w, int64_t ldw, int64_t n, int64_t k, float* out);
  // pack from B stored as B[k][n] (V in P.V) with row stride ldb
  void (*pack_f32_kn)(const float* b, int64_t ldb, int64_t n, int64_t k, float* out);
  // rows [m0, m1) x panel columns [n0, n1): threads split work by calling on disjoint ranges
  void (*gemm_f32)(const float* a, int64_t lda, const float* packed_b, int64_t n, int64_t k, float* c,
                   int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi);
  int64_t f32_nr;  // panel width: n ranges must be multiples of this (except the last)
  // ---- INT8 GEMM: u8 activations x s8 weights -> s32 ----
  size_t (*pack_s8_size)(int64_t n, int64_t k);
  void (*pack_s8)(const int8_t* w, int64_t ldw, int64_t n, int64_t k, void* out);  // from W[n][k], row stride ldw
  int64_t s8_k_align;  // activation rows must be padded (with the zero point) to a multiple of this
  void (*gemm_s8)(const uint8_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c,
                  int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi);
  int64_t s8_nr;
  // optional fused path (null where absent): per-column symmetric s8 quantization of X [k][n] packed directly as
  // the B operand of W[n][k] = X^T (attention's V), with column scales and integer column sums
  void (*quant_pack_kn_s8)(const float* x, int64_t ldx, int64_t k, int64_t n, void* out, float* scale_out,
                           int32_t* sum_out);
  // optional fused path (null where absent): quantize_rows_s8 of W [n][k] (per-row symmetric scales and integer row
  // sums) packed directly as pack_s8 lays it out (attention's K): the same bytes as the two calls
  void (*quant_pack_nk_s8)(const float* w, int64_t ldw, int64_t n, int64_t k, void* out, float* scale_out,
                           int32_t* sum_out);
  // ---- block-sparse INT8 GEMM (1x4 blocks) ----
  // bytes of the per-call activation re-layout (0: the level reads the row-major activations directly; else tiles
  // as kBsrAtTile says, round4(k) bytes per token: an aligned m0 starts at at + m0 * round4(k))
  size_t (*bsr_at_size)(int64_t m, int64_t k);
  // re-lay rows [m0, m1) (m0 a multiple of 16) of the quantized activations for gemm_bsr_s8; pair_quads (levels
  // with bsr_pair_quads_max_k) for a BsrS8::pair_quads weight
  void (*bsr_pack_at)(const uint8_t* q, int64_t ldq, int64_t m, int64_t m0, int64_t m1, int64_t k, uint8_t* at,
                      bool pair_quads);
  // optional (null where absent): quantize_u8 (static scale / zero point) and bsr_pack_at of float rows in one pass,
  // the u8 rows never stored; the same bytes
  void (*bsr_quant_pack_at)(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k,
                            float inv_scale, int32_t zp, uint8_t* at, bool pair_quads);
  // C[:, n0:n1] for all m rows; epilogue as gemm_s8 (row_scale / row_zp per token, w_scale / col_sum in `w`);
  // with out_u8 the rows are also requantized there (C is then scratch, which a level may leave unwritten)
  void (*gemm_bsr_s8)(const uint8_t* q, int64_t ldq, const uint8_t* at, int64_t m, const BsrS8& w, float* c,
                      int64_t ldc, int64_t n0, int64_t n1, const Epilogue& epi);
  bool bsr_qkv_bf16;  // gemm_bsr_s8 can write BF16 attention operands (Epilogue::qkv; only with AVX512_BF16)
  bool bsr_qkv_s8;  // gemm_bsr_s8 can write the INT8 attention's operands (Epilogue::qkv_s8)
  // ---- BF16 GEMM (null where the level has no kernel; usable only when the CPU has AVX512_BF16) ----
  size_t (*pack_bf16_size)(int64_t n, int64_t k);
  void (*pack_bf16)(const uint16_t* w, int64_t n, int64_t k, void* out);
  // rows of x to bf16 (round to nearest even), padding each row to ldy with zeros
  void (*to_bf16_rows)(const float* x, int64_t ldx, uint16_t* y, int64_t ldy, int64_t rows, int64_t cols);
  void (*gemm_bf16)(const uint16_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c,
                    int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi);
  int64_t bf16_nr;
  void (*pack_bf16_kn)(const float* x, int64_t ldx, int64_t n, int64_t k, void* out);        // from X[k][n]
  void (*pack_bf16_nk_f32)(const float* w, int64_t ldw, int64_t n, int64_t k, void* out);    // from W[n][k]
  // softmax of each row (x is scratch afterwards) rounded to bf16 into y, rows zero padded to ldy
  void (*softmax_bf16_rows)(float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* y, int64_t ldy);
  // ---- row ops ----
  void (*layernorm)(const float* x, float* y, int64_t rows, int64_t cols, int64_t ld, const float* g,
                    const float* b, float eps);
  void (*softmax_rows)(float* x, int64_t rows, int64_t cols, int64_t ld);
  // softmax straight to u8: p = e / sum with e = exp(x - max) in (0, 1], so quantizing p with the per-row scale
  // max(p) / 255 = 1 / (255 sum) gives round(255 e): no normalization pass and no separate quantization pass
  void (*softmax_u8_rows)(const float* x, int64_t rows, int64_t cols, int64_t ld, uint8_t* q, int64_t ldq,
                          float* scale_out, float* zp_out);
  void (*activation)(float* x, int64_t n, Act act);
  void (*minmax)(const float* x, int64_t n, float* mn, float* mx);
  // quantize rows of x [rows x cols] (row stride ldx) to u8 rows of stride ldq, padding cols..ldq with zp
  void (*quantize_u8)(const float* x, int64_t ldx, uint8_t* q, int64_t ldq, int64_t rows, int64_t cols,
                      float inv_scale, int32_t zp);
  // dynamic per-row quantization: each row gets its own asymmetric range (always containing 0)
  void (*quantize_rows_u8)(const float* x, int64_t ldx, uint8_t* q, int64_t ldq, int64_t rows, int64_t cols,
                           float* scale_out, float* zp_out);
  // symmetric per-row s8 in [-127, 127]: scale = max|x| / 127; also each row's integer sum (for zero points)
  void (*quantize_rows_s8)(const float* x, int64_t ldx, int8_t* q, int64_t ldq, int64_t rows, int64_t cols,
                           float* scale_out, int32_t* sum_out);
  // apply the epilogue to one fp32 tile in place (used by kernels and by the executor)
  void (*epilogue_f32)(float* c, int64_t ldc, int64_t rows, int64_t cols, int64_t m0, int64_t n0,
                       const Epilogue& epi);
  // ---- sparse runtime (issue 3): FP32 sparse GEMMs (csr-f32, block-f32, nm-f32) ----
  // bytes of the per-call activation re-layout (tokens along the vector, zero padded; 0: the level reads the
  // row-major activations directly)
  size_t (*spf32_at_size)(int64_t m, int64_t k);
  // input chunk of the gemm_spf32 kernel (0: whole rows); SparseF32::chunk_ptr must be built for it
  int64_t spf32_chunk_k;
  // re-lay rows [m0, m1) (m0 a multiple of 16) of x [m][k] (row stride ldx) for gemm_spf32 / gemm_nm_f32
  // (layout private to the level; tiles as kSparseAtTile says, round8(k) floats per token)
  void (*spf32_pack_at)(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k, float* at);
  // C[:, n0:n1] = epi(x . W^T) for all m rows (n0 a multiple of 16); epilogue as gemm_f32 (alpha, bias, act,
  // residual)
  void (*gemm_spf32)(const float* x, int64_t ldx, const float* at, int64_t m, const SparseF32& w, float* c,
                     int64_t ldc, int64_t n0, int64_t n1, const Epilogue& epi);
  void (*gemm_nm_f32)(const float* x, int64_t ldx, const float* at, int64_t m, const NmF32& w, float* c,
                      int64_t ldc, int64_t n0, int64_t n1, const Epilogue& epi);
  // pack n bitmask rows (mask: n x `words` 64-bit words, one bit per input; values: the rows' non-zeros,
  // consecutive) straight into the FP32 GEMM's panels, as pack_f32_nk would pack their dense expansion
  void (*pack_f32_bitmask)(const uint64_t* mask, int64_t words, const float* values, int64_t n, int64_t k,
                           float* out);
  // gemm_bsr_s8 reads BsrS8::values16 (block values widened to 16 bits at load) instead of values: the avx2 level,
  // whose vpmaddwd needs 16-bit weights (widening them per use cost a vpmovsxbw per block row, which issues less
  // than once per cycle on Zen 3: bench/results/avx2_rates.md)
  bool bsr_wide_values;
  // tokens per tile of the block-sparse INT8 re-layout (bsr_at_offset): 64 at avx512 (a 16-token vector per 64-byte
  // line, the kernel's 4 vectors cover a quad row's 4 lines), 8 at avx2 (its kernel's pass: each pass then reads
  // 32 contiguous bytes per quad instead of half a line from every 256 bytes, which left it a quarter of L1's sets)
  int64_t bsr_at_tile;
  // gemm_bsr_s8 runs 4x4 weights whose values all lie in [-64, 64] on their 8-bit values (BsrS8::narrow; the loader
  // keeps them unwidened): avx2, where u8 x s8 pair products by vpmaddubsw then cannot saturate
  bool bsr_narrow_values;
  // optional (null where absent): the pair re-layout of rows [m0, m1) for BsrS8::pair_slots weights (levels whose
  // INT8 products take input pairs, vpmaddwd: there a quad with one or two non-zeros costs the lanes of two inputs,
  // not four); bsr_pairs_at_size bytes, token m0 at bsr_pairs_at_offset
  void (*bsr_pack_pairs)(const uint8_t* q, int64_t ldq, int64_t m, int64_t m0, int64_t m1, int64_t k, int64_t slots,
                         uint8_t* at);
  // 4x4 blocks of 16-bit weights with at most this many inputs run over a pair-major re-layout in 16-token passes
  // (BsrS8::pair_quads, bsr_pair_quads; 0: never): avx2, where a 16-token slice of such a re-layout still fits L1
  int64_t bsr_pair_quads_max_k;
  // ---- end of the sparse runtime block ----
  // ---- fused float attention (null where absent: the executor then runs gemm_f32, softmax_rows, gemm_f32) ----
  // bytes of scratch (any alignment) for one call
  size_t (*attention_f32_scratch)(int64_t seq, int64_t d);
  // one (sequence, head): out[i, :d] = softmax_j(alpha * q_i . k_j + bias[j]) . v_j for the seq rows of q, k and v
  // (d floats each, row stride ld); out rows at stride ldo
  void (*attention_f32)(const float* q, const float* k, const float* v, int64_t ld, int64_t seq, int64_t d,
                        float alpha, const float* bias, float* out, int64_t ldo, void* scratch);
  // gemm_spf32 / gemm_nm_f32 honour Epilogue::out_at_f32 (a sparse FP32 FFN1 writes FFN2's re-layout)
  bool spf32_fills_next_at;
  // 1x4-block INT8 weights (no pair records) of fewer input quads than this run as row pairs (BsrS8::pair_tile:
  // the loader builds them); 0: never
  int64_t bsr_row_pairs_max_quads;
  // optional (null where absent; set at avx512): the byte re-layout of rows [m0, m1) (m0 a multiple of 16) that
  // gathered quads read (BsrS8::gq_ptr), bsr_at_size bytes and tiles of bsr_at_tile tokens as bsr_pack_at's: per
  // tile, one 64-byte row per input, token t of the tile at byte 16 ((t % 16) / 4) + 4 (t / 16) + t % 4 (the order
  // in which the kernel's byte and word interleaves hand its four token vectors back in token order)
  void (*bsr_pack_bytes)(const uint8_t* q, int64_t ldq, int64_t m, int64_t m0, int64_t m1, int64_t k, uint8_t* at);
  // the same straight from float rows with the static quantization (bsr_quant_pack_at's arithmetic)
  void (*bsr_quant_pack_bytes)(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k,
                               float inv_scale, int32_t zp, uint8_t* at);
  // optional, with attention_f32: the same attention over operands already in its layout (q rows at stride ldq, K
  // in panels of 16 keys [seq/16][d][16], V in panels of 16 channels [d/16][seq][16]; seq and d multiples of 16),
  // as a sparse FP32 QKV's epilogue writes them (Epilogue::qkv_f32); scratch as attention_f32's
  void (*attention_f32_packed)(const float* q, int64_t ldq, const float* kpack, const float* vpack, int64_t seq,
                               int64_t d, float alpha, const float* bias, float* out, int64_t ldo, void* scratch);
  // optional (null where absent; avx512, called only where cpu_has_avx512_vbmi()): INT8 weights as permuted quads
  // (PermS8) over the quantized activation rows, rows [m0, m1) x columns [n0, n1) (n0 a multiple of kPermPanel);
  // epilogue and results as gemm_s8's (the same int32 sums)
  void (*gemm_perm_s8)(const uint8_t* a, int64_t lda, const PermS8& w, float* c, int64_t ldc, int64_t m0, int64_t m1,
                       int64_t n0, int64_t n1, const Epilogue& epi);
  // gemm_spf32 runs csr-f32 weights as generated code (SparseF32::jit; avx512, whose 64-token re-layout the code
  // reads)
  bool spf32_jit;
  // optional (avx512): quantize_rows_u8 (dynamic: each row's own range, scale and zero point written to
  // row_scale / row_zp) and bsr_pack_at of float rows [m0, m1) in one pass, 16 rows at a time, the u8 rows never
  // stored; the same bytes and parameters
  void (*bsr_quant_rows_pack_at)(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k,
                                 float* row_scale, float* row_zp, uint8_t* at);
  // gemm_bsr_s8 takes calls of 1 .. bsr_few_tokens tokens of 4x4 blocks (not gathered, no row pairs) with at ==
  // nullptr: it then reads the quantized rows q (ldq apart) instead of a re-layout, a block's 4 rows per token in
  // one 128-bit product; output columns from a multiple of 4, an epilogue without out_at or qkv (0: never)
  int64_t bsr_few_tokens;
};

const KernelTable& kernels_for(Isa isa);

namespace avx2 {  // the avx2 level's fused float attention, which the avx512 table takes on cpu_halves_512bit_fma()
size_t attention_f32_scratch(int64_t seq, int64_t d);
void attention_f32(const float* q, const float* k, const float* v, int64_t ld, int64_t seq, int64_t d, float alpha,
                   const float* bias, float* out, int64_t ldo, void* scratch);
void attention_f32_packed(const float* q, int64_t ldq, const float* kpack, const float* vpack, int64_t seq,
                          int64_t d, float alpha, const float* bias, float* out, int64_t ldo, void* scratch);
}  // namespace avx2

// Whether a block-sparse INT8 weight runs over the pair-major re-layout at this level (BsrS8::pair_quads): the one
// rule the loader, the executor's re-layouts and the test bindings share
inline bool bsr_pair_quads(const KernelTable& kt, int64_t block_rows, bool narrow, int64_t pair_slots, int64_t k) {
  return block_rows == 4 && !narrow && pair_slots == 0 && k <= kt.bsr_pair_quads_max_k;
}

// Whether N:M INT8 weights load as permuted quads (PermS8) here: the level's kernel, a CPU with VBMI, and not
// turned off for an A/B run (TRIMFORMER_PERM_QUADS=0); the loader, the planner's candidates and the tests share it
inline bool perm_s8_available(const KernelTable& kt) {
  return kt.gemm_perm_s8 != nullptr && cpu_has_avx512_vbmi() && !env_off("TRIMFORMER_PERM_QUADS");
}

// Whether 1x4 INT8 rows (csr-int8, nm-int8) load as gathered quads here when their quads are sparse: the level's
// byte re-layout (avx512) and not turned off for an A/B run (TRIMFORMER_GATHERED_QUADS=0); the loader and the
// planner's candidates share it
inline bool gathered_quads_available(const KernelTable& kt) {
  return kt.bsr_pack_bytes != nullptr && !env_off("TRIMFORMER_GATHERED_QUADS");
}

namespace scalar { const KernelTable& table(); }
namespace avx2 { const KernelTable& table(); }
namespace avx512 { const KernelTable& table(); }

}  // namespace tf
