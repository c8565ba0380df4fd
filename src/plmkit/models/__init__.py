"""Model families. Model code never imports training, data or CLI code."""
from plmkit.models.auto import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForPreTraining,
                                AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                                AutoModelForTokenClassification)
from plmkit.models.bert import (BERT_PRESETS, BertConfig, BertForMaskedLM, BertForNextSentencePrediction,
                                BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                                BertForRelationClassification, BertForTokenClassification, BertModel)
