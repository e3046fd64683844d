"""SpaceEvo's quantized-accuracy proxy: the teacher network and block-wise NSR distillation of INT8 students."""
