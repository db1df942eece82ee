// Experiment (not a runtime kernel): INT8 block-sparse GEMM on AMX over the union of a 16-row panel's non-zero
// 4x4 blocks. Per panel of 16 output rows, the input quads (4 consecutive k) where any of its 4 row blocks holds a
// non-zero are packed, 16 per A tile (weights, signed: tdpbsud), zeros where a row block lacks the quad. The
// activations' quads (the block kernel's At layout, [k/4][128 tokens][4]) are not equally spaced for a panel, and
// tileloadd takes one stride, so each tile's 16 quads are first copied to a staging buffer. Prints the union's
// density, a check against the reference product, and the best of 50 single-thread runs at 128 tokens with the
// copy and (NOCOPY=1, wrong results, timing only) without it. Results: bench/results/amx_union_sparse.md.
//
//   g++ -O2 -march=sapphirerapids -o /tmp/amx_union bench/micro/amx_union_sparse.cpp && /tmp/amx_union 768 3072 0.9
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include <algorithm>
struct alignas(64) Cfg { uint8_t palette=1, start=0, res[14]={}; uint16_t colsb[16]={}; uint8_t rows[16]={}; };
static bool nocopy = getenv("NOCOPY") != nullptr;
int main(int argc, char** argv) {
  int N = atoi(argv[1]), K = atoi(argv[2]), M = 128; double sp = atof(argv[3]);
  if (syscall(SYS_arch_prctl, 0x1023, 18)) { printf("no amx perm\n"); return 1; }
  std::mt19937 rng(0);
  int KQ = K / 4, NB = N / 4;
  std::vector<int8_t> W(N * K, 0);
  std::uniform_real_distribution<float> u(0, 1);
  for (int b = 0; b < NB; ++b) for (int q = 0; q < KQ; ++q) if (u(rng) >= sp)
    for (int r = 0; r < 4; ++r) for (int j = 0; j < 4; ++j) W[(4*b+r)*K + 4*q + j] = (int8_t)(rng() % 255 - 127);
  std::vector<uint8_t> X(M * K); for (auto& x : X) x = rng() % 256;
  // At[q][128][4]
  std::vector<uint8_t> At(KQ * 512);
  for (int q = 0; q < KQ; ++q) for (int m = 0; m < M; ++m) memcpy(&At[q * 512 + m * 4], &X[m * K + 4 * q], 4);
  // panels
  int P = N / 16; std::vector<std::vector<int>> U(P); std::vector<int8_t> A; std::vector<int> tile_off(P + 1, 0); size_t tiles = 0, uq = 0;
  for (int p = 0; p < P; ++p) {
    for (int q = 0; q < KQ; ++q) { bool nz = false; for (int r = 0; r < 16 && !nz; ++r) for (int j = 0; j < 4; ++j) if (W[(16*p+r)*K + 4*q + j]) { nz = true; break; } if (nz) U[p].push_back(q); }
    uq += U[p].size();
    int T = (U[p].size() + 15) / 16; tile_off[p] = tiles; tiles += T;
    for (int t = 0; t < T; ++t) for (int r = 0; r < 16; ++r) for (int s = 0; s < 16; ++s) { int idx = 16*t+s; for (int j = 0; j < 4; ++j) A.push_back(idx < (int)U[p].size() ? W[(16*p+r)*K + 4*U[p][idx] + j] : 0); }
    U[p].resize(T * 16, -1);
  }
  tile_off[P] = tiles;
  printf("union density %.3f, tiles %zu\n", (double)uq / (P * KQ), tiles);
  std::vector<int32_t> C(N * M); alignas(64) static uint8_t stage[16 * 512]; std::vector<uint8_t> zero(512, 0);
  Cfg cfg; for (int i = 0; i < 8; ++i) { cfg.rows[i] = 16; cfg.colsb[i] = 64; } _tile_loadconfig(&cfg);
  auto run = [&]() {
    for (int p = 0; p < P; ++p) {
      for (int half = 0; half < 2; ++half) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int t = tile_off[p]; t < tile_off[p + 1]; ++t) {
          const int* uq = &U[p][16 * (t - tile_off[p])];
          for (int s = 0; s < 16; ++s) {
            const uint8_t* src = uq[s] >= 0 ? &At[uq[s] * 512 + half * 256] : zero.data();
            if (!nocopy) for (int v = 0; v < 4; ++v) _mm512_store_si512(stage + s * 256 + 64 * v, _mm512_loadu_si512(src + 64 * v));
          }
          _tile_loadd(4, &A[(size_t)t * 1024], 64);
          _tile_loadd(5, stage, 256); _tile_dpbsud(0, 4, 5);
          _tile_loadd(6, stage + 64, 256); _tile_dpbsud(1, 4, 6);
          _tile_loadd(7, stage + 128, 256); _tile_dpbsud(2, 4, 7);
          _tile_loadd(5, stage + 192, 256); _tile_dpbsud(3, 4, 5);
        }
        int32_t* c = &C[(16 * p) * M + half * 64];
        _tile_stored(0, c, M * 4); _tile_stored(1, c + 16, M * 4); _tile_stored(2, c + 32, M * 4); _tile_stored(3, c + 48, M * 4);
      }
    }
  };
  run();
  // check vs reference: C[n][m] = sum_k X[m][k] W[n][k]
  long bad = 0; for (int n = 0; n < N; n += 7) for (int m = 0; m < M; m += 5) { int32_t s = 0; for (int k = 0; k < K; ++k) s += (int)X[m*K+k] * W[n*K+k]; if (s != C[n*M+m]) ++bad; }
  printf("mismatches %ld\n", bad);
  double best = 1e9; for (int it = 0; it < 50; ++it) { auto t0 = std::chrono::steady_clock::now(); run(); double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(); best = std::min(best, ms); }
  printf("N=%d K=%d M=%d sp=%.2f: %.3f ms (best of 50), %.1f useful GMAC/s\n", N, K, M, sp, best, N * (double)K * M * (1 - sp) / best / 1e6);
}
