"""The learning code: data, distillation, scores, students, training loops and export formats (torch)."""
