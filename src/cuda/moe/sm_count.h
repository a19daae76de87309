// The SM count of a device, for launchers that size their grids by it. Asking the driver on
// every call costs more than a small kernel's setup, so it is cached per device.
#pragma once

#include "fusekit/status.h"

namespace fusekit::cuda_moe {

Status sm_count_of(int device, int* sm_count);

}  // namespace fusekit::cuda_moe
