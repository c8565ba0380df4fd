"""Assertions shared by the decoder parity tests (GPT-2, Llama)."""
import torch

TOL = dict(atol=1e-5, rtol=1e-5)


def assert_same_outputs(ours, theirs, keep: torch.Tensor) -> None:
    """Logits, loss, hidden states and attention probabilities agree on the real tokens ``keep`` (B, T)."""
    torch.testing.assert_close(ours.logits[keep], theirs.logits[keep], **TOL)
    torch.testing.assert_close(ours.loss, theirs.loss, **TOL)
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(a[keep], b[keep], **TOL)
    for a, b in zip(ours.attentions, theirs.attentions):
        torch.testing.assert_close(a.transpose(1, 2)[keep], b.transpose(1, 2)[keep], **TOL)
