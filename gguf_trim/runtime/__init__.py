"""The one place that loads llama.cpp: child-process load checks, Llama construction, batch engine, guard, langid."""
