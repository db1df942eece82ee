// Generated csr-f32 code (see jit_f32.h and docs/kernels.md): a handful of AVX-512 instructions, EVEX-encoded here
// (Intel SDM vol. 2, section 2.7), written into pages that are then made executable. Why generated: only code can
// name a register per row, and that lets a group of 28 rows keep its accumulators in registers while each input's
// At row is loaded once for every row of the group that holds it (bench/micro/csr_f32_jit_rates.cpp).
#include "jit_f32.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace tf {

namespace {
enum Gpr : int { RDX = 2, RSI = 6, RDI = 7 };
constexpr int kAtRegs = 4;  // At rows rotate through zmm28 .. zmm31

struct Emitter {
  std::vector<uint8_t> b;
  // EVEX prefix, 512-bit, no masking: map mm (1: 0F, 2: 0F38), prefix pp (0: none, 1: 66), ModRM.reg = reg,
  // vvvv = the second source (0 where unused), rm a register (reg-reg forms) or a base register (no index)
  void evex(int mm, int pp, int reg, int vvvv, int rm, bool rm_is_reg, bool bcast) {
    const int r = (reg >> 3) & 1, r2 = (reg >> 4) & 1, base_b = (rm >> 3) & 1, x = rm_is_reg ? (rm >> 4) & 1 : 0;
    b.push_back(0x62);
    b.push_back(static_cast<uint8_t>((!r << 7) | (!x << 6) | (!base_b << 5) | (!r2 << 4) | mm));
    b.push_back(static_cast<uint8_t>(((~vvvv & 15) << 3) | 4 | pp));
    b.push_back(static_cast<uint8_t>((2 << 5) | (static_cast<int>(bcast) << 4) | (!((vvvv >> 4) & 1) << 3)));
  }
  // ModRM and displacement for [base + disp]: disp8 scaled by n (EVEX compressed displacement) where it fits
  void mem(int reg, int base, int64_t disp, int n) {
    if (disp % n == 0 && disp / n >= -128 && disp / n <= 127) {
      b.push_back(static_cast<uint8_t>((1 << 6) | ((reg & 7) << 3) | base));
      b.push_back(static_cast<uint8_t>(static_cast<int8_t>(disp / n)));
      return;
    }
    if (disp < INT32_MIN || disp > INT32_MAX) throw std::invalid_argument("csr-f32 code: displacement out of range");
    b.push_back(static_cast<uint8_t>((2 << 6) | ((reg & 7) << 3) | base));
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(static_cast<uint32_t>(disp) >> (8 * i)));
  }
  void zero(int d) {  // vpxord zmm_d, zmm_d, zmm_d
    evex(1, 1, d, d, d, true, false);
    b.push_back(0xEF);
    b.push_back(static_cast<uint8_t>(0xC0 | ((d & 7) << 3) | (d & 7)));
  }
  void load(int d, int base, int64_t disp) {  // vmovaps zmm_d, [base + disp]
    evex(1, 0, d, 0, base, false, false);
    b.push_back(0x28);
    mem(d, base, disp, 64);
  }
  void store(int s, int base, int64_t disp) {  // vmovaps [base + disp], zmm_s
    evex(1, 0, s, 0, base, false, false);
    b.push_back(0x29);
    mem(s, base, disp, 64);
  }
  void fma_bcast(int d, int v, int base, int64_t disp) {  // vfmadd231ps zmm_d, zmm_v, dword [base + disp]{1to16}
    evex(2, 1, d, v, base, false, true);
    b.push_back(0xB8);
    mem(d, base, disp, 4);
  }
  void add(int reg, int64_t imm) {  // add reg, imm32 (rsi, rdi)
    if (imm < INT32_MIN || imm > INT32_MAX) throw std::invalid_argument("csr-f32 code: step out of range");
    b.insert(b.end(), {0x48, 0x81, static_cast<uint8_t>(0xC0 | reg)});
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(static_cast<uint32_t>(imm) >> (8 * i)));
  }
  void ret() { b.push_back(0xC3); }
};

struct Entry {
  int32_t input, row;
  float value;
};
}  // namespace

JitF32Code::~JitF32Code() {
  if (code_) munmap(code_, mapped_);
}

bool JitF32Code::build(int64_t n, const int32_t* rowptr, const int32_t* cols, const float* values,
                       const std::vector<int32_t>& block_start, int32_t at_stride, int32_t y_stride) {
#if !defined(__x86_64__) || defined(_WIN32)
  return false;  // the code takes its arguments in rdi, rsi, rdx and clobbers every vector register: System V only
#endif
  Emitter e;
  std::vector<Entry> entries;
  int64_t max_block = 0;
  blocks_.assign(1, 0);
  for (size_t b = 0; b < block_start.size(); ++b) {
    const int64_t bs = block_start[b], be = b + 1 < block_start.size() ? block_start[b + 1] : n;
    max_block = std::max(max_block, be - bs);
    const int64_t count = (be - bs + kJitRows - 1) / kJitRows;  // groups of near-equal size
    for (int64_t g = 0; g < count; ++g) {
      JitGroupF32 grp;
      grp.row0 = static_cast<int32_t>(bs + (be - bs) * g / count);
      grp.rows = static_cast<int32_t>(bs + (be - bs) * (g + 1) / count - grp.row0);
      grp.code_off = static_cast<int64_t>(e.b.size());
      grp.value_off = static_cast<int64_t>(values_.size());
      entries.clear();
      for (int32_t i = 0; i < grp.rows; ++i) {
        e.zero(i);
        for (int32_t j = rowptr[grp.row0 + i]; j < rowptr[grp.row0 + i + 1]; ++j)
          entries.push_back({cols[j], i, values[j]});
      }
      std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& c) { return a.input < c.input; });
      // rdi and rsi move along (inputs come in order, values in sequence) so that every At load and every value
      // stays within a compressed disp8 of its base (7-byte instructions instead of 10)
      int64_t at_base = 0;  // the input rdi points at
      int32_t voff = 0;     // the next value's offset from rsi
      int slot = 0;
      for (size_t q = 0; q < entries.size();) {
        const int32_t input = entries[q].input;
        const int at = kJitRows + (slot++ % kAtRegs);
        if ((input - at_base) * at_stride > 127 * 64) {
          const int64_t to = input + 127 * 64 / at_stride;  // the farthest base that still reaches this input
          e.add(RDI, (to - at_base) * at_stride);
          at_base = to;
        }
        e.load(at, RDI, (input - at_base) * at_stride);
        for (; q < entries.size() && entries[q].input == input; ++q) {
          if (voff > 127 * 4) {  // past the compressed disp8's reach: move the base
            e.add(RSI, voff);
            voff = 0;
          }
          e.fma_bcast(entries[q].row, at, RSI, voff);
          values_.push_back(entries[q].value);
          voff += 4;
        }
      }
      for (int32_t i = 0; i < grp.rows; ++i) e.store(i, RDX, static_cast<int64_t>(i) * y_stride);
      e.ret();
      groups_.push_back(grp);
    }
    blocks_.push_back(static_cast<int32_t>(groups_.size()));
  }
  values_.resize(values_.size() + 16, 0.0f);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t mapped = (std::max<size_t>(e.b.size(), 1) + page - 1) / page * page;
  void* mem = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return false;
  std::memcpy(mem, e.b.data(), e.b.size());
  if (mprotect(mem, mapped, PROT_READ | PROT_EXEC) != 0) {
    munmap(mem, mapped);
    return false;
  }
  code_ = mem;
  code_size_ = e.b.size();
  mapped_ = mapped;
  view_.code = static_cast<const uint8_t*>(code_);
  view_.code_bytes = static_cast<int64_t>(code_size_);
  view_.values = values_.data();
  view_.groups = groups_.data();
  view_.block_groups = blocks_.data();
  view_.blocks = static_cast<int64_t>(blocks_.size()) - 1;
  view_.max_block_rows = max_block;
  return true;
}

}  // namespace tf
