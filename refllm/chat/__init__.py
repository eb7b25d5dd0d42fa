"""What goes around one chat turn: tools (``tools``), and the plan tying tools, formats and
thinking to one generation (``turn``). Thinking markers live in ``refllm.thinking``."""
