"""llmrig's benchmark harness: workloads against the OpenAI-compatible endpoint, raw per-request metrics, A/B
statistics with a verdict, determinism checks and reports (issue 12; built up in steps)."""
