// Declarations of the CUDA device functions the CUDA dialect uses, with CUDA's signatures, so
// that clang's CUDA front end can check the rendered source without a CUDA toolkit
// (codegen/tests/gpu_render.rs, `rendered_source_compiles_with_clang`).
#include <__clang_cuda_builtin_vars.h>
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __launch_bounds__(n) __attribute__((launch_bounds(n)))
__device__ float __uint_as_float(unsigned int);
__device__ unsigned int __float_as_uint(float);
__device__ double __longlong_as_double(long long);
__device__ long long __double_as_longlong(double);
__device__ void __syncthreads();
__device__ unsigned int atomicCAS(unsigned int*, unsigned int, unsigned int);
__device__ unsigned long long atomicCAS(unsigned long long*, unsigned long long, unsigned long long);
__device__ float atomicAdd(float*, float);
__device__ double atomicAdd(double*, double);
__device__ int atomicAdd(int*, int);
__device__ int __shfl_down_sync(unsigned, int, int);
__device__ float __shfl_down_sync(unsigned, float, int);
__device__ double __shfl_down_sync(unsigned, double, int);
__device__ long long __shfl_down_sync(unsigned, long long, int);
#define M1(g) __device__ float g##f(float); __device__ double g(double);
M1(sqrt) M1(exp) M1(log) M1(sin) M1(cos) M1(tanh) M1(erf) M1(floor) M1(ceil) M1(rint) M1(fabs)
__device__ float powf(float, float); __device__ double pow(double, double);
__device__ float fmodf(float, float); __device__ double fmod(double, double);
