/* SPDX-License-Identifier: MIT
 *
 * A stand-in for libnvidia-ml.so.1 (NVML) for the tests of nvidia_gpu_facts, where there
 * is no GPU. It implements only the six entry points the module calls, with the
 * signatures and return codes of nvml.h (NVML API 12: NVIDIA/go-nvml gen/nvml/nvml.h),
 * and answers from environment variables read at each call:
 *
 *   NVML_STUB_INIT     what nvmlInit_v2 returns (default 0, NVML_SUCCESS)
 *   NVML_STUB_UUIDS    the GPUs' UUIDs, comma separated: "GPU-a,GPU-b" (default: none)
 *   NVML_STUB_ENCODER  per GPU, what nvmlDeviceGetEncoderCapacity answers for H.264:
 *                      "ok:N" (NVML_SUCCESS, capacity N %), "notsupported"
 *                      (NVML_ERROR_NOT_SUPPORTED) or "error:CODE"; e.g. "ok:100,notsupported"
 *   NVML_STUB_LOG      a file each call appends its name to
 *
 * Like NVML it refuses calls before nvmlInit_v2 (NVML_ERROR_UNINITIALIZED), unknown device
 * handles and null pointers (NVML_ERROR_INVALID_ARGUMENT), and a UUID buffer too short
 * for the UUID (NVML_ERROR_INSUFFICIENT_SIZE). Unlike NVML it knows only the H.264
 * encoder (NVML_ENCODER_QUERY_H264 = 0) and refuses any other query type, so that the
 * tests see what the module asks.
 *
 * Build: gcc -shared -fPIC -Wall -Wextra -Werror -o libnvidia-ml.so.1 nvml_stub.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_UNKNOWN 999
#define NVML_ENCODER_QUERY_H264 0

#define STUB_MAX_GPUS 16
#define STUB_FIELD_SIZE 128

struct nvmlDevice_st {
    unsigned int index;
};
typedef struct nvmlDevice_st *nvmlDevice_t;

static struct nvmlDevice_st devices[STUB_MAX_GPUS];
static int initialised; /* nvmlInit_v2 calls not yet matched by nvmlShutdown */

static void logged(const char *call) {
    const char *path = getenv("NVML_STUB_LOG");
    FILE *log;
    if (path == NULL || *path == '\0') {
        return;
    }
    log = fopen(path, "a");
    if (log != NULL) {
        fprintf(log, "%s\n", call);
        fclose(log);
    }
}

/* The INDEX-th comma-separated field of environment variable NAME into OUT; 0 if absent. */
static int field(const char *name, unsigned int index, char *out, size_t size) {
    const char *value = getenv(name);
    const char *end;
    size_t length;
    if (value == NULL || *value == '\0') {
        return 0;
    }
    for (; index > 0; index--) {
        value = strchr(value, ',');
        if (value == NULL) {
            return 0;
        }
        value++;
    }
    end = strchr(value, ',');
    length = end == NULL ? strlen(value) : (size_t)(end - value);
    if (length == 0 || length >= size) {
        return 0;
    }
    memcpy(out, value, length);
    out[length] = '\0';
    return 1;
}

static unsigned int count(void) {
    char uuid[STUB_FIELD_SIZE];
    unsigned int gpus = 0;
    while (gpus < STUB_MAX_GPUS && field("NVML_STUB_UUIDS", gpus, uuid, sizeof uuid)) {
        gpus++;
    }
    return gpus;
}

static int known(nvmlDevice_t device) {
    return device != NULL && device >= devices && device < devices + count();
}

nvmlReturn_t nvmlInit_v2(void) {
    const char *answer = getenv("NVML_STUB_INIT");
    nvmlReturn_t code = answer == NULL ? NVML_SUCCESS : atoi(answer);
    logged("nvmlInit_v2");
    if (code == NVML_SUCCESS) {
        initialised++;
    }
    return code;
}

nvmlReturn_t nvmlShutdown(void) {
    logged("nvmlShutdown");
    if (initialised == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    initialised--;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    logged("nvmlDeviceGetCount_v2");
    if (initialised == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (deviceCount == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *deviceCount = count();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    logged("nvmlDeviceGetHandleByIndex_v2");
    if (initialised == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (device == NULL || index >= count()) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    devices[index].index = index;
    *device = &devices[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    char value[STUB_FIELD_SIZE];
    logged("nvmlDeviceGetUUID");
    if (initialised == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (!known(device) || uuid == NULL ||
        !field("NVML_STUB_UUIDS", device->index, value, sizeof value)) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (strlen(value) + 1 > length) {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    strcpy(uuid, value);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEncoderCapacity(nvmlDevice_t device, int encoderQueryType,
                                          unsigned int *encoderCapacity) {
    char answer[STUB_FIELD_SIZE];
    logged("nvmlDeviceGetEncoderCapacity");
    if (initialised == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (!known(device) || encoderCapacity == NULL ||
        encoderQueryType != NVML_ENCODER_QUERY_H264) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (!field("NVML_STUB_ENCODER", device->index, answer, sizeof answer)) {
        return NVML_ERROR_UNKNOWN;
    }
    if (strncmp(answer, "ok:", 3) == 0) {
        *encoderCapacity = (unsigned int)strtoul(answer + 3, NULL, 10);
        return NVML_SUCCESS;
    }
    if (strcmp(answer, "notsupported") == 0) {
        return NVML_ERROR_NOT_SUPPORTED;
    }
    if (strncmp(answer, "error:", 6) == 0) {
        return atoi(answer + 6);
    }
    return NVML_ERROR_UNKNOWN;
}
