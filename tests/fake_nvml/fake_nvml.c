/* A stand-in libnvidia-ml.so.1 for tests: devices whose power is a known function of
 * CLOCK_MONOTONIC time and whose energy counter is its exact integral.
 *
 * Configured at nvmlInit from FAKE_NVML_DEVICES: devices separated by ';', each a list
 * of key=value separated by ','. Keys (defaults in brackets):
 *   base_w [300]   amp_w [0]   period_s [1]      power(t) = base + amp*sin(2*pi*t/period)
 *   update_ms [100]            energy counter refresh period (the value is stale between)
 *   power_update_ms [20]       instant power (field 186) refresh period
 *   avg [1]                    nvmlDeviceGetPowerUsage / field 185 is a 1 s average
 *   counter [1]                0: the energy counter is NOT_SUPPORTED
 *   fields [1]                 0: nvmlDeviceGetFieldValues is NOT_SUPPORTED
 *   latency_us [0]             every device call busy-waits this long
 *   lost_after_s [-1]          after this many s from init every device call is GPU_IS_LOST
 *   reset_at_s [-1]            the counter restarts from 0 this many s after init
 *   limit_w [700]              enforced power limit
 *   procs [0]                  other processes computing on the GPU (pids 4000000 + i)
 * Times are CLOCK_MONOTONIC seconds; energy is the integral of power from t = 0. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXDEV 8
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15

typedef struct {
    double base_w, amp_w, period_s, update_s, power_update_s, latency_s, lost_after_s,
        reset_at_s, limit_w;
    int avg, counter, fields, index, procs;
    char name[64], uuid[80];
} dev_t_;

static dev_t_ devs[MAXDEV];
static int ndev = 0;
static int refcount = 0;
static double t_init = 0;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double power_at(const dev_t_ *d, double t) {
    return d->base_w + d->amp_w * sin(2 * M_PI * t / d->period_s);
}

static double energy_at(const dev_t_ *d, double t) { /* exact integral from 0, J */
    return d->base_w * t + d->amp_w * d->period_s / (2 * M_PI) * (1 - cos(2 * M_PI * t / d->period_s));
}

static double stale(double t, double period) { return period > 0 ? floor(t / period) * period : t; }

static void parse(void) {
    const char *env = getenv("FAKE_NVML_DEVICES");
    char buf[4096];
    ndev = 0;
    snprintf(buf, sizeof buf, "%s", env ? env : "");
    char *save1 = NULL;
    for (char *dev = strtok_r(buf, ";", &save1); dev && ndev < MAXDEV; dev = strtok_r(NULL, ";", &save1)) {
        dev_t_ *d = &devs[ndev];
        *d = (dev_t_){300, 0, 1, 0.1, 0.02, 0, -1, -1, 700, 1, 1, 1, ndev, 0, "", ""};
        snprintf(d->name, sizeof d->name, "Fake GPU %d", ndev);
        snprintf(d->uuid, sizeof d->uuid, "GPU-fa4e0000-0000-0000-0000-00000000000%d", ndev);
        char *save2 = NULL;
        for (char *kv = strtok_r(dev, ",", &save2); kv; kv = strtok_r(NULL, ",", &save2)) {
            char key[32];
            double v;
            if (sscanf(kv, "%31[^=]=%lf", key, &v) != 2) continue;
            if (!strcmp(key, "base_w")) d->base_w = v;
            else if (!strcmp(key, "amp_w")) d->amp_w = v;
            else if (!strcmp(key, "period_s")) d->period_s = v;
            else if (!strcmp(key, "update_ms")) d->update_s = v * 1e-3;
            else if (!strcmp(key, "power_update_ms")) d->power_update_s = v * 1e-3;
            else if (!strcmp(key, "avg")) d->avg = (int)v;
            else if (!strcmp(key, "counter")) d->counter = (int)v;
            else if (!strcmp(key, "fields")) d->fields = (int)v;
            else if (!strcmp(key, "latency_us")) d->latency_s = v * 1e-6;
            else if (!strcmp(key, "lost_after_s")) d->lost_after_s = v;
            else if (!strcmp(key, "reset_at_s")) d->reset_at_s = v;
            else if (!strcmp(key, "limit_w")) d->limit_w = v;
            else if (!strcmp(key, "procs")) d->procs = (int)v;
        }
        ndev++;
    }
}

/* Every device call: check init, busy-wait the latency, fail if the GPU is lost. */
static int enter(void *h, dev_t_ **out) {
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    dev_t_ *d = (dev_t_ *)h;
    if (d < devs || d >= devs + ndev) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->latency_s > 0) {
        double until = now_s() + d->latency_s;
        while (now_s() < until) {}
    }
    if (d->lost_after_s >= 0 && now_s() - t_init >= d->lost_after_s) return NVML_ERROR_GPU_IS_LOST;
    *out = d;
    return NVML_SUCCESS;
}

static unsigned long long counter_mj(const dev_t_ *d) {
    double t = stale(now_s(), d->update_s);
    double e = energy_at(d, t);
    if (d->reset_at_s >= 0 && t >= t_init + d->reset_at_s) e -= energy_at(d, t_init + d->reset_at_s);
    return (unsigned long long)floor(e * 1000.0);
}

static unsigned int average_mw(const dev_t_ *d) {
    double t = stale(now_s(), d->update_s);
    double p = d->avg ? energy_at(d, t) - energy_at(d, t - 1.0) : power_at(d, t);
    return (unsigned int)lround(p * 1000.0);
}

static unsigned int instant_mw(const dev_t_ *d) {
    return (unsigned int)lround(power_at(d, stale(now_s(), d->power_update_s)) * 1000.0);
}

int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    if (refcount++ == 0) { parse(); t_init = now_s(); }
    return NVML_SUCCESS;
}
int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
int nvmlInit(void) { return nvmlInitWithFlags(0); }
int nvmlShutdown(void) {
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    refcount--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(int r) {
    switch (r) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 7: return "Insufficient Size";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}

/* ---- Issue 11 (GPU path): keys read apart from parse(), for discovery tests ----
 *   mig [0]            1: MIG mode is on (nvmlDeviceGetMigMode reports 1)
 *   handle_fails [0]   1: nvmlDeviceGetHandleByIndex fails (Unknown Error) for this GPU
 * Read from FAKE_NVML_DEVICES as parse() reads it; the device's position is its index. */
#define NVML_ERROR_UNKNOWN 999
static double extra_key(int index, const char *want, double dflt) {
    const char *env = getenv("FAKE_NVML_DEVICES");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", env ? env : "");
    char *save1 = NULL;
    int i = 0;
    for (char *dev = strtok_r(buf, ";", &save1); dev; dev = strtok_r(NULL, ";", &save1), i++) {
        if (i != index) continue;
        char *save2 = NULL;
        for (char *kv = strtok_r(dev, ",", &save2); kv; kv = strtok_r(NULL, ",", &save2)) {
            char key[32];
            double v;
            if (sscanf(kv, "%31[^=]=%lf", key, &v) == 2 && !strcmp(key, want)) return v;
        }
    }
    return dflt;
}
/* ---- end of issue 11 block ---- */

int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    *count = ndev;
    return NVML_SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) {
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    if ((int)i >= ndev) return NVML_ERROR_INVALID_ARGUMENT;
    if (extra_key((int)i, "handle_fails", 0) != 0) return NVML_ERROR_UNKNOWN; /* issue 11 */
    *h = &devs[i];
    return NVML_SUCCESS;
}

static int copy_str(char *dst, unsigned int n, const char *src) {
    if (strlen(src) + 1 > n) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

int nvmlDeviceGetName(void *h, char *name, unsigned int n) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    return copy_str(name, n, d->name);
}
int nvmlDeviceGetUUID(void *h, char *uuid, unsigned int n) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    return copy_str(uuid, n, d->uuid);
}
int nvmlSystemGetDriverVersion(char *v, unsigned int n) { return copy_str(v, n, "999.99-fake"); }

int nvmlDeviceGetEnforcedPowerLimit(void *h, unsigned int *mw) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *mw = (unsigned int)(d->limit_w * 1000);
    return NVML_SUCCESS;
}

typedef struct { unsigned long long total, free, used; } mem_t;
int nvmlDeviceGetMemoryInfo(void *h, mem_t *m) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    m->total = 80ULL << 30; m->free = 79ULL << 30; m->used = 1ULL << 30;
    return NVML_SUCCESS;
}

int nvmlDeviceGetMaxClockInfo(void *h, int type, unsigned int *mhz) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *mhz = type == 2 ? 2619 : 1980; /* NVML_CLOCK_MEM = 2 */
    return NVML_SUCCESS;
}

int nvmlDeviceGetMigMode(void *h, unsigned int *cur, unsigned int *pend) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *cur = *pend = extra_key(d->index, "mig", 0) != 0; /* issue 11 */
    return NVML_SUCCESS;
}

int nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    if (!d->counter) return NVML_ERROR_NOT_SUPPORTED;
    *mj = counter_mj(d);
    return NVML_SUCCESS;
}

int nvmlDeviceGetPowerUsage(void *h, unsigned int *mw) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *mw = average_mw(d);
    return NVML_SUCCESS;
}

typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    unsigned int valueType, nvmlReturn;
    union { double d; unsigned int ui; unsigned long long ull; } value;
} field_t;

int nvmlDeviceGetFieldValues(void *h, int count, field_t *v) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    if (!d->fields) return NVML_ERROR_NOT_SUPPORTED;
    for (int i = 0; i < count; i++) {
        v[i].timestamp = (long long)(now_s() * 1e6);
        v[i].latencyUsec = 0;
        v[i].nvmlReturn = NVML_SUCCESS;
        switch (v[i].fieldId) {
        case 83:
            if (!d->counter) { v[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED; break; }
            v[i].valueType = 3; v[i].value.ull = counter_mj(d); break;
        case 185: v[i].valueType = 1; v[i].value.ui = average_mw(d); break;
        case 186: v[i].valueType = 1; v[i].value.ui = instant_mw(d); break;
        default: v[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    return NVML_SUCCESS;
}

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} proc_t;

int nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *count, proc_t *procs) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    unsigned int n = (unsigned int)d->procs;
    if (n == 0) { *count = 0; return NVML_SUCCESS; }
    if (procs == NULL || *count < n) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    for (unsigned int i = 0; i < n; i++) {
        procs[i].pid = 4000000 + i;
        procs[i].usedGpuMemory = 1ULL << 30;
        procs[i].gpuInstanceId = 0xFFFFFFFF;
        procs[i].computeInstanceId = 0xFFFFFFFF;
    }
    *count = n;
    return NVML_SUCCESS;
}
