// cuda_runtime.h: stand-in for NVIDIA's header of the same name in the CPU emulator.
// Found through -I kernels/emu (never on nvcc's include path); everything it
// would provide comes from emu/simt.h.
#pragma once
#include "simt.h"
