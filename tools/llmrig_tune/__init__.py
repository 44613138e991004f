"""llmrig's safe-change procedure (playbooks/tune.yml): candidate steps of one knob, each judged on the harness's
evidence (determinism, draft acceptance, stress, the A/B verdict), and the best step that passed everything."""
