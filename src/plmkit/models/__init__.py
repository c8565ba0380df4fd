"""Model families. Model code never imports training, data or CLI code."""
from plmkit.models.auto import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                                AutoModelForPreTraining, AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM,
                                AutoModelForSequenceClassification, AutoModelForTokenClassification)
from plmkit.models.bert import (BERT_PRESETS, BertConfig, BertForMaskedLM, BertForNextSentencePrediction,
                                BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                                BertForRelationClassification, BertForTokenClassification, BertLMHeadModel, BertModel)
from plmkit.models.gpt2 import GPT2_PRESETS, GPT2Config, GPT2LMHeadModel, GPT2Model
from plmkit.models.llama import LLAMA_PRESETS, LlamaConfig, LlamaForCausalLM, LlamaModel
from plmkit.models.bart import BART_PRESETS, BartConfig, BartForConditionalGeneration, BartModel
from plmkit.models.marian import MARIAN_PRESETS, MarianConfig, MarianModel, MarianMTModel
from plmkit.models.encoder_decoder import EncoderDecoderConfig, EncoderDecoderModel
from plmkit.models.sentence_transformers import SentenceTransformerFiles, sentence_embeddings
from plmkit.models.registry import Family, config_from_preset, families, family, family_of_preset
