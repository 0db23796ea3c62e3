"""Li, Monroe & Jurafsky (2016), reproduced: GloVe, the RNN/LSTM/Bi-LSTM sentiment models and
their training, the lexical tasks and their MLP, the paper's figures and reported numbers, and
the model comparison. Builds on the library layers below it."""

from captum_erasure.paper.li2016.figures import (
                                                 plot_dimension_heatmap,
                                                 plot_frequency_scatter,
                                                 plot_importance_histogram,
                                                 plot_layer_heatmaps,
)
from captum_erasure.paper.li2016.glove import (
                                                 build_glove_tokenizer,
                                                 frequency_correlation,
                                                 glove_embedding_matrix,
                                                 glove_tokenizer,
)
from captum_erasure.paper.li2016.lexical_mlp import (
                                                 LexicalMLP,
                                                 dimension_importance,
                                                 train_lexical_model,
                                                 unit_importance,
)
from captum_erasure.paper.li2016.lexical_tasks import LexicalTask, build_lexical_tasks
from captum_erasure.paper.li2016.model_comparison import (
                                                 chosen_words_by_model,
                                                 corpus_importance_by_model,
                                                 sentence_scores_by_model,
                                                 top_words_by_model,
)
from captum_erasure.paper.li2016.rnn_models import (
                                                 GloveRNNClassifier,
                                                 RNNClassifierConfig,
                                                 load_sentiment_model,
                                                 load_sentiment_models,
                                                 train_sentiment_model,
)
from captum_erasure.paper.li2016.training import train_classifier

__all__ = ["plot_dimension_heatmap", "plot_frequency_scatter", "plot_importance_histogram",
           "plot_layer_heatmaps", "build_glove_tokenizer", "frequency_correlation",
           "glove_embedding_matrix", "glove_tokenizer", "LexicalMLP", "dimension_importance",
           "train_lexical_model", "unit_importance", "LexicalTask", "build_lexical_tasks",
           "chosen_words_by_model", "corpus_importance_by_model", "sentence_scores_by_model",
           "top_words_by_model", "GloveRNNClassifier", "RNNClassifierConfig",
           "load_sentiment_model", "load_sentiment_models", "train_sentiment_model",
           "train_classifier"]
