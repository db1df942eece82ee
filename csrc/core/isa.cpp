#include "isa.h"
#include "decoder_kernels.h"

#include <cpuid.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace tf {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512Vnni: return "avx512_vnni";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

bool isa_from_name(const std::string& name, Isa* out) {
  if (name == "avx512_vnni" || name == "avx512") { *out = Isa::Avx512Vnni; return true; }
  if (name == "avx2") { *out = Isa::Avx2; return true; }
  if (name == "scalar") { *out = Isa::Scalar; return true; }
  return false;
}

static uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

struct CpuFlags {
  bool avx2 = false, fma = false, avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false,
       avx512vnni = false, avx512bf16 = false, avx512vbmi2 = false, avx512vbmi = false;
};

static CpuFlags query_flags() {
  CpuFlags f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), has_avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  if (!osxsave || !has_avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = ymm_state && (b & (1u << 5));
  f.avx512f = zmm_state && (b & (1u << 16));
  f.avx512dq = zmm_state && (b & (1u << 17));
  f.avx512bw = zmm_state && (b & (1u << 30));
  f.avx512vl = zmm_state && (b & (1u << 31));
  f.avx512vnni = zmm_state && (c & (1u << 11));
  f.avx512vbmi2 = zmm_state && (c & (1u << 6));
  f.avx512vbmi = zmm_state && (c & (1u << 1));
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = zmm_state && (a & (1u << 5));
  return f;
}

// Asked once per process: in a virtual machine each cpuid exits to the hypervisor, and resolve_isa runs on every
// call of the kernel bindings that tests and benchmarks time.
static const CpuFlags& read_flags() {
  static const CpuFlags flags = query_flags();
  return flags;
}

Isa detect_isa() {
  const CpuFlags& f = read_flags();
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.fma) return Isa::Avx512Vnni;
  if (f.avx2 && f.fma) return Isa::Avx2;
  return Isa::Scalar;
}

bool cpu_has_avx512_bf16() { return read_flags().avx512bf16; }

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::string(v) != "0";
}

bool env_off(const char* name) {
  const char* v = std::getenv(name);
  return v && std::string(v) == "0";
}

bool cpu_has_avx512_vbmi2() { return !env_flag("TRIMFORMER_NO_VBMI2") && read_flags().avx512vbmi2; }

bool cpu_has_avx512_vbmi() { return !env_flag("TRIMFORMER_NO_VBMI") && read_flags().avx512vbmi; }

// AMX needs the CPU bits, the OS's XCR0 tile state and, on Linux, a per-process permission for the 8 KiB of tile
// data (arch_prctl ARCH_REQ_XCOMP_PERM): without it the first tile instruction faults. Asked once per process.
static bool amx_int8_available() {
  if (env_flag("TRIMFORMER_NO_AMX")) return false;
  if (!read_flags().avx512vnni) return false;  // also means OSXSAVE, so xgetbv is safe
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = d & (1u << 24), int8 = d & (1u << 25);
  if (!tile || !int8) return false;
  if ((xgetbv0() & (3ull << 17)) != (3ull << 17)) return false;  // XTILECFG and XTILEDATA enabled by the OS
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

bool cpu_has_amx_int8() {
  static const bool available = amx_int8_available();
  return available;
}

// AMX-BF16 (CPUID.7.0:EDX bit 22) on top of what the INT8 tiles need (the same tile state and permission)
bool cpu_has_amx_bf16() {
  static const bool available = [] {
    if (!cpu_has_amx_int8()) return false;
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22));
  }();
  return available;
}

namespace {
// whether CPUID's vendor string (leaf 0: EBX, EDX, ECX) is the 12 characters `vendor`
bool cpu_vendor_is(const char* vendor) {
  unsigned a, regs[3];
  if (!__get_cpuid(0, &a, &regs[0], &regs[2], &regs[1])) return false;
  return std::memcmp(regs, vendor, 12) == 0;
}
}  // namespace

bool cpu_is_intel() {
  static const bool intel = cpu_vendor_is("GenuineIntel");
  return intel;
}

bool cpu_halves_512bit_fma() {
  static const bool halves = [] {
    if (!read_flags().avx512f) return false;
    unsigned a, b, c, d;
    if (!cpu_vendor_is("AuthenticAMD") || !__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned base = (a >> 8) & 0xf, family = base == 0xf ? base + ((a >> 20) & 0xff) : base;
    return family == 0x19;
  }();
  return halves;
}

Isa resolve_isa(const std::string& requested) {
  const Isa best = detect_isa();
  std::string want = requested;
  if (want.empty() || want == "auto") {
    const char* env = std::getenv("TRIMFORMER_ISA");
    want = env ? env : "";
  }
  if (want.empty() || want == "auto") return best;
  Isa isa;
  if (!isa_from_name(want, &isa))
    throw std::invalid_argument("unknown ISA level '" + want + "' (expected avx512_vnni, avx2 or scalar)");
  if (static_cast<int>(isa) > static_cast<int>(best))
    throw std::invalid_argument(std::string("ISA level '") + want + "' is not supported by this CPU (best: " +
                                isa_name(best) + ")");
  return isa;
}

const KernelTable& kernels_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512Vnni: return avx512::table();
    case Isa::Avx2: return avx2::table();
    default: return scalar::table();
  }
}

const DecoderKernels& decoder_kernels_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512Vnni: return avx512::decoder_table();
    case Isa::Avx2: return avx2::decoder_table();
    default: return scalar::decoder_table();
  }
}

}  // namespace tf
