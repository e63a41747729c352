// A CPU emulation of the CUDA features the renderer's CUDA dialect uses, for the test-only
// `CudaEmu` backend (codegen/tests/emu/mod.rs): the rendered source is compiled by g++
// after this header and run on the host.
//
// Blocks run one after the other; the threads of a block are fibers (a small register switch
// on x86-64 Linux, ucontext elsewhere or with -DCUDA_EMU_UCONTEXT) on one OS
// thread, switched only where a thread waits at a barrier (`__syncthreads`, or the warp
// exchange of `__shfl_down_sync`). A `__shared__` array is a function-local static, which is
// block-shared because one block runs at a time. A barrier that can never complete (threads
// that exit or wait elsewhere) is reported and the program exits with status 3.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <ucontext.h>
#include <utility>
#include <vector>
#include <type_traits>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {

#if defined(__x86_64__) && defined(__linux__) && !defined(CUDA_EMU_UCONTEXT)
/// Saves the callee-saved registers on the current stack, stores the stack pointer in `*save`
/// and continues on the stack `to` (which a previous call saved, or `start` prepared): a
/// fiber switch without the signal-mask system calls of swapcontext.
extern "C" void emu_switch(void** save, void* to);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
#endif

/// The block's fibers: their saved stacks (or contexts) and stacks.
#if defined(__x86_64__) && defined(__linux__) && !defined(CUDA_EMU_UCONTEXT)
inline void* sched;
inline std::vector<void*> fibers;
#else
inline ucontext_t sched;
inline std::vector<ucontext_t> fibers;
#endif
/// Fiber stacks: uninitialised, so that only the pages a thread touches are mapped.
inline std::vector<std::unique_ptr<char[]>> stacks;
inline std::vector<char> done;
inline unsigned cur = 0;
/// Set when a thread arrives at a barrier, passes one, or finishes: a round of the scheduler
/// without any is a deadlock.
inline bool progress = false;
inline void (*body)() = nullptr;
constexpr size_t STACK = 128 * 1024;

#if defined(__x86_64__) && defined(__linux__) && !defined(CUDA_EMU_UCONTEXT)
[[noreturn]] inline void trampoline() {
    body();
    done[cur] = 1;
    progress = true;
    void* dead;
    emu_switch(&dead, sched);
    abort();  // a finished fiber is never resumed
}

/// Back to the scheduler (only from a fiber).
inline void yield() { emu_switch(&fibers[cur], sched); }

/// Prepares fiber `t` to start at `trampoline`: six zero registers for `emu_switch` to pop,
/// then the return address, so that `trampoline` starts with the stack aligned as after a
/// call.
inline void start(unsigned t) {
    uintptr_t top = ((uintptr_t)stacks[t].get() + STACK) & ~(uintptr_t)15;
    void** slot = (void**)(top - 16);
    slot[0] = (void*)&trampoline;
    slot[1] = nullptr;
    for (int i = 1; i <= 6; i++) slot[-i] = nullptr;
    fibers[t] = (void*)(slot - 6);
}

inline void resume(unsigned t) { emu_switch(&sched, fibers[t]); }
#else
inline void trampoline() {
    body();
    done[cur] = 1;
    progress = true;
}

/// Back to the scheduler (only from a fiber).
inline void yield() { swapcontext(&fibers[cur], &sched); }

inline void start(unsigned t) {
    getcontext(&fibers[t]);
    fibers[t].uc_stack.ss_sp = stacks[t].get();
    fibers[t].uc_stack.ss_size = STACK;
    fibers[t].uc_link = &sched;
    makecontext(&fibers[t], trampoline, 0);
}

inline void resume(unsigned t) { swapcontext(&sched, &fibers[t]); }
#endif

/// Whether the threads of the current launch run one after the other on the main stack (an
/// entry point without barriers: the flat and thread entries); a barrier then is an error.
inline bool direct = false;

struct Barrier {
    unsigned count = 0, gen = 0;
};

/// Waits until `n` threads have arrived (cooperatively: the fibers of one block).
inline void wait(Barrier& b, unsigned n) {
    if (direct) {
        fprintf(stderr, "cuda_emu: a barrier in an entry point launched without fibers\n");
        exit(3);
    }
    progress = true;
    if (n <= 1) return;
    unsigned g = b.gen;
    if (++b.count == n) {
        b.count = 0;
        b.gen++;
        return;
    }
    while (b.gen == g) yield();
}

inline Barrier block_barrier;
inline Barrier warp_barrier[64];
inline uint64_t exchange[64][32];

/// Runs `f` as every thread of the current block (blockIdx, blockDim set by the caller).
inline void run_block(void (*f)()) {
    unsigned n = blockDim.x;
    if (direct) {
        // In descending order: the interpreter runs iterations in ascending order, so two
        // threads that write one element unordered show up as a difference.
        for (unsigned i = 0; i < n; i++) {
            unsigned t = n - 1 - i;
            threadIdx.x = t;
            f();
        }
        return;
    }
    if (n == 1) {
        threadIdx.x = 0;
        f();
        return;
    }
    body = f;
    if (fibers.size() < n) {
        fibers.resize(n);
        stacks.resize(n);
        for (auto& s : stacks)
            if (!s) s.reset(new char[STACK]);
    }
    done.assign(n, 0);
    block_barrier = Barrier{};
    for (auto& w : warp_barrier) w = Barrier{};
    for (unsigned t = 0; t < n; t++) start(t);
    unsigned left = n;
    // Each round runs every thread to its next barrier, in ascending and descending order by
    // turns, so that code between two barriers that depends on the threads' order differs.
    for (unsigned round = 0; left > 0; round++) {
        progress = false;
        for (unsigned i = 0; i < n; i++) {
            unsigned t = round & 1 ? n - 1 - i : i;
            if (done[t]) continue;
            cur = t;
            threadIdx.x = t;
            resume(t);
            if (done[t]) left--;
        }
        if (left > 0 && !progress) {
            fprintf(stderr, "cuda_emu: deadlock: %u of %u threads of block %u wait forever\n",
                    left, n, blockIdx.x);
            exit(3);
        }
    }
}

/// A launch argument: a pointer passed as is, a size converted from the i64 it points to.
template <class A>
A conv(void* p) {
    if constexpr (std::is_pointer_v<A>) {
        return (A)p;
    } else {
        return (A)(*(const long long*)p);
    }
}

template <class... A, size_t... I>
void invoke(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(conv<A>(args[I])...);
}

/// The number of parameters of an entry point.
template <class... A>
constexpr size_t arity(void (*)(A...)) {
    return sizeof...(A);
}

/// Calls an entry point with `args` (one pointer per parameter, see `conv`).
template <class... A>
void call(void (*f)(A...), void** args) {
    invoke(f, args, std::index_sequence_for<A...>{});
}

}  // namespace emu

inline void __syncthreads() { emu::wait(emu::block_barrier, blockDim.x); }

/// Lane `lane + delta`'s value of the calling warp (the own value past lane 31), exchanged
/// through a per-warp array between two warp barriers. Every lane of the warp must call it.
template <class T>
T __shfl_down_sync(unsigned mask, T v, int delta) {
    static_assert(sizeof(T) <= 8, "shuffles of up to 8 bytes");
    if (mask != 0xffffffffu) {
        fprintf(stderr, "cuda_emu: __shfl_down_sync with a partial mask %x\n", mask);
        exit(3);
    }
    unsigned lane = threadIdx.x & 31u, w = threadIdx.x >> 5;
    unsigned lanes = blockDim.x - w * 32 < 32 ? blockDim.x - w * 32 : 32;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    emu::exchange[w][lane] = bits;
    emu::wait(emu::warp_barrier[w], lanes);
    T r = v;
    if (delta >= 0 && lane + (unsigned)delta < lanes)
        memcpy(&r, &emu::exchange[w][lane + delta], sizeof(T));
    emu::wait(emu::warp_barrier[w], lanes);
    return r;
}

inline unsigned int atomicCAS(unsigned int* p, unsigned int c, unsigned int v) {
    __atomic_compare_exchange_n(p, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return c;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long c,
                                    unsigned long long v) {
    __atomic_compare_exchange_n(p, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return c;
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <class F, class U>
F atomic_add_float(F* p, F v) {
    U old = __atomic_load_n((U*)p, __ATOMIC_SEQ_CST);
    for (;;) {
        F f;
        memcpy(&f, &old, sizeof f);
        F n = f + v;
        U nb;
        memcpy(&nb, &n, sizeof nb);
        if (__atomic_compare_exchange_n((U*)p, &old, nb, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return f;
    }
}
inline float atomicAdd(float* p, float v) { return atomic_add_float<float, uint32_t>(p, v); }
inline double atomicAdd(double* p, double v) { return atomic_add_float<double, uint64_t>(p, v); }

inline float __uint_as_float(unsigned int x) { return std::bit_cast<float>(x); }
inline unsigned int __float_as_uint(float f) { return std::bit_cast<unsigned int>(f); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double f) { return std::bit_cast<long long>(f); }

namespace emu {

/// One launch read from stdin: entry point, groups, threads per group.
struct Entry {
    const char* name;
    void (*fn)(void**);
    size_t arity;
};

inline void read_exact(void* p, size_t n) {
    if (n > 0 && fread(p, 1, n, stdin) != n) {
        fprintf(stderr, "cuda_emu: short input\n");
        exit(2);
    }
}
template <class T>
T read_val() {
    T v;
    read_exact(&v, sizeof v);
    return v;
}

inline void** launch_args = nullptr;
inline void (*launch_fn)(void**) = nullptr;
inline void thread_body() { launch_fn(launch_args); }

/// The program: reads the buffers (u32 count; per buffer u64 bytes, u8 output flag, then
/// the bytes), the sizes (u32 count, i64 each) and the launches (u32 count; per launch u32
/// name length, name, u64 groups, u32 threads, u8 scratch flag: the scratch buffer is passed
/// after the buffers; u8 direct flag: see `direct`), runs them in order, and writes the
/// output buffers' bytes to stdout in order.
inline int main(const Entry* entries, size_t n_entries) {
    uint32_t nb = read_val<uint32_t>();
    std::vector<std::vector<uint64_t>> bufs(nb);
    std::vector<uint64_t> bytes(nb);
    std::vector<uint8_t> out(nb);
    for (uint32_t i = 0; i < nb; i++) {
        bytes[i] = read_val<uint64_t>();
        out[i] = read_val<uint8_t>();
        bufs[i].assign(bytes[i] / 8 + 1, 0);
        read_exact(bufs[i].data(), bytes[i]);
    }
    uint32_t ns = read_val<uint32_t>();
    std::vector<long long> sizes(ns);
    for (auto& s : sizes) s = read_val<long long>();
    uint64_t scratch_bytes = read_val<uint64_t>();
    std::vector<uint64_t> scratch(scratch_bytes / 8 + 1, 0);
    uint32_t nl = read_val<uint32_t>();
    for (uint32_t l = 0; l < nl; l++) {
        uint32_t len = read_val<uint32_t>();
        std::vector<char> name(len + 1, 0);
        read_exact(name.data(), len);
        uint64_t groups = read_val<uint64_t>();
        uint32_t local = read_val<uint32_t>();
        uint8_t with_scratch = read_val<uint8_t>();
        direct = read_val<uint8_t>() != 0;
        const Entry* e = nullptr;
        for (size_t i = 0; i < n_entries; i++)
            if (strcmp(entries[i].name, name.data()) == 0) e = &entries[i];
        if (!e) {
            fprintf(stderr, "cuda_emu: no entry point %s\n", name.data());
            return 2;
        }
        std::vector<void*> args;
        for (auto& b : bufs) args.push_back(b.data());
        if (with_scratch) args.push_back(scratch.data());
        for (auto& s : sizes) args.push_back(&s);
        if (args.size() != e->arity) {
            fprintf(stderr, "cuda_emu: %s takes %zu arguments, %zu given\n", name.data(),
                    e->arity, args.size());
            return 2;
        }
        launch_args = args.data();
        launch_fn = e->fn;
        gridDim.x = (unsigned)groups;
        blockDim.x = local;
        // Blocks in descending order (a GPU promises none; the interpreter ascends).
        for (uint64_t g = groups; g-- > 0;) {
            blockIdx.x = (unsigned)g;
            run_block(thread_body);
        }
    }
    for (uint32_t i = 0; i < nb; i++)
        if (out[i] && fwrite(bufs[i].data(), 1, bytes[i], stdout) != bytes[i]) return 2;
    return fflush(stdout) == 0 ? 0 : 2;
}

}  // namespace emu
