"""What every engine shares: the interfaces (``protocols``) and what each shared call goes
through (deadlines, the circuit breaker, stuck-call accounting); ``scripted/`` holds the test doubles.
"""
