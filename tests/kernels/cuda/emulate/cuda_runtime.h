// Emulated CUDA runtime (emu.h).
#pragma once
#include "emu.h"
