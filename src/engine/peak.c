/* Public wrapper of the FMA-peak measurement (cpu.c) for benchmarks outside the engine. */
#include "config.h"

#include "engine/cpu.h"

double xf_cpu_fma_peak(int n_threads, int ms)
{
    return xf_cpu_fma_peak_gflops(n_threads, ms);
}
