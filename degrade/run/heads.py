"""Which model heads degrade reads, from config.json alone (no torch, no model built).

A checkpoint's `architectures` names its head. degrade scores causal LMs, sequence classifiers and
text encoder-decoders (AutoModelForSeq2SeqLM's model types); for any other head it says which one
it met, so that the model checks are skipped with that reason while the history and weight checks
still run (before: the head was built as a causal LM and refused as bad input, exit 2).
"""
from __future__ import annotations

from typing import Mapping

# architecture suffixes of heads that are not (yet) scored, with what they would need
OTHER_HEADS = {
    "ForTokenClassification": "per-token class labels (token classification)",
    "ForQuestionAnswering": "answer spans (question answering)",
    "ForMaskedLM": "masked-token targets (masked LM)",
    "ForMultipleChoice": "multiple-choice inputs",
    "ForImageClassification": "image eval data",
    "ForCTC": "audio eval data",
    "ForAudioClassification": "audio eval data",
    "ForSpeechSeq2Seq": "audio eval data",
    "VisionEncoderDecoderModel": "image eval data",
    "SpeechEncoderDecoderModel": "audio eval data",
}
# model types whose inputs are not token ids (vision, speech): no text eval data can feed them
NON_TEXT_TYPES = {"whisper": "audio", "wav2vec2": "audio", "hubert": "audio", "speech_to_text": "audio",
                  "vit": "image", "deit": "image", "beit": "image", "swin": "image", "convnext": "image",
                  "trocr": "image", "vision-encoder-decoder": "image", "speech-encoder-decoder": "audio",
                  "clip": "image", "siglip": "image"}


def unsupported_head(config: Mapping) -> str | None:
    """Why degrade cannot score this checkpoint's head, or None when it can (or cannot tell)."""
    model_type = str(config.get("model_type") or "")
    archs = [str(a) for a in config.get("architectures") or []]
    if model_type in NON_TEXT_TYPES:
        kind = NON_TEXT_TYPES[model_type]
        return (f"the model is a {model_type} ({', '.join(archs) or 'no architectures listed'}), which reads "
                f"{kind} input: no {kind} eval data support yet")
    for arch in archs:
        for suffix, needs in OTHER_HEADS.items():
            if arch.endswith(suffix):
                return f"the model's head {arch} is not supported yet (it needs {needs})"
    if config.get("is_encoder_decoder") and model_type:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
        if model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            return f"the encoder-decoder model type {model_type} is not a text seq2seq model degrade reads"
    return None
