// LD_PRELOAD tracer: every kernel's GPU start and end (CUPTI concurrent-kernel activity, graph nodes included) written to
// $KTRACE_OUT as CSV "Start,Duration,Name" — a timeline where nsys is not installed.
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
static FILE *out;
static void CUPTIAPI requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    *size = 16 << 20;
    *buffer = aligned_alloc(8, *size);
    *max_records = 0;
}
static void CUPTIAPI completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid)
{
    CUpti_Activity *record = NULL;
    while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS)
    {
        if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)
        {
            KERNEL_T *k = (KERNEL_T *)record;
            fprintf(out, "%llu,%llu,%s\n", (unsigned long long)k->start, (unsigned long long)(k->end - k->start), k->name);
        }
    }
    free(buffer);
}
__attribute__((constructor)) static void start(void)
{
    const char *path = getenv("KTRACE_OUT");
    out = fopen(path ? path : "/tmp/ktrace.csv", "w");
    fprintf(out, "Start,Duration,Name\n");
    if (cuptiActivityRegisterCallbacks(requested, completed) != CUPTI_SUCCESS) fprintf(stderr, "ktrace: register failed\n");
    if (cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) fprintf(stderr, "ktrace: enable failed\n");
}
__attribute__((destructor)) static void stop(void)
{
    cuptiActivityFlushAll(1);
    fclose(out);
}
