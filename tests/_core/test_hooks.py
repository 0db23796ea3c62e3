"""Hooks act only on the thread that installed them: LIT serves requests on threads while a
DiffMask probe fits in the background on the same model (the CI failure this guards: a fit's
keep mask of one batch's length multiplied into a request of another length)."""

from __future__ import annotations

import threading

import torch
from mlm_toys import toy_classifier, toy_tokenizer

from captum_erasure._core.hooks import zeroing
from captum_erasure.attr._diffmask_gates import replacing

TEXTS = ["a very dull movie", "not good"]


def forward_on_another_thread(model, **inputs) -> torch.Tensor:
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=model(**inputs).logits))
    thread.start()
    thread.join()
    return result["out"]


def test_an_erasure_on_one_thread_leaves_another_threads_forward_alone():
    model, tokenizer = toy_classifier(), toy_tokenizer()
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = model(**enc).logits
        embeddings = model.get_input_embeddings()
        mask = torch.zeros(2, enc["input_ids"].shape[1])
        with zeroing([embeddings], [mask], over="positions"):
            erased_here = model(**enc).logits
            elsewhere = forward_on_another_thread(model, **enc)
    assert not torch.allclose(erased_here, plain)  # the hook acts here
    assert torch.equal(elsewhere, plain)  # and nowhere else


def test_a_replacement_on_one_thread_does_not_reach_a_request_of_another_length():
    model, tokenizer = toy_classifier(), toy_tokenizer()
    fit_batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    request = tokenizer(["the film is unbelievable !"], return_tensors="pt")
    keep = torch.zeros(fit_batch["input_ids"].shape)
    with torch.no_grad():
        plain = model(**request).logits
        with replacing(model.get_input_embeddings(),
                       lambda vectors: vectors * keep.unsqueeze(-1)):
            elsewhere = forward_on_another_thread(model, **request)
    assert torch.equal(elsewhere, plain)
