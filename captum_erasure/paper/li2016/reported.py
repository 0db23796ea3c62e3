"""Numbers reported by Li, Monroe & Jurafsky (2016, arXiv 1612.08220v3), to set beside ours.

Model names follow the paper: "Bi-LSTM", "Uni-LSTM", "RNN". Dimensions are the paper's own
1-based names ("31st", "26th"), which are 0-based columns 30 and 25 of the GloVe matrix: those
two columns, and no others, correlate strongly with log frequency (checked in
``docs/li2016_reproduction.md``).
"""

from __future__ import annotations

MODELS = ("Bi-LSTM", "Uni-LSTM", "RNN")

# Section 4: Stanford Sentiment Treebank, sentence-level fine-grained (5-class) accuracy.
SST_FINE_GRAINED_ACCURACY = {"Bi-LSTM": 0.526, "Uni-LSTM": 0.501, "RNN": 0.453}

# Table 3: mean Eq. 1 importance of sentiment words over the test sentences containing them.
TABLE3 = {
    "greatest": {"Bi-LSTM": 9.463, "Uni-LSTM": 5.593, "RNN": 0.742},
    "wonderful": {"Bi-LSTM": 9.521, "Uni-LSTM": 3.292, "RNN": 0.704},
    "worst": {"Bi-LSTM": 7.739, "Uni-LSTM": 4.698, "RNN": 0.967},
    "excellent": {"Bi-LSTM": 6.835, "Uni-LSTM": 4.883, "RNN": 1.859},
    "best": {"Bi-LSTM": 4.916, "Uni-LSTM": 2.448, "RNN": 0.548},
    "hated": {"Bi-LSTM": 6.557, "Uni-LSTM": 3.512, "RNN": 4.338},
    "love": {"Bi-LSTM": 1.678, "Uni-LSTM": 1.786, "RNN": 0.999},
    "unforgettable": {"Bi-LSTM": 2.286, "Uni-LSTM": 1.648, "RNN": 1.482},
    "waste": {"Bi-LSTM": 4.579, "Uni-LSTM": 3.600, "RNN": 2.342},
    "disaster": {"Bi-LSTM": 3.728, "Uni-LSTM": 3.362, "RNN": 0.021},
}

# Table 1: the top three words per model, with their scores.
TABLE1_TOP3 = {
    "Bi-LSTM": [("masterpiece", 104.0), ("sweetest", 47.0), ("dreadful", 44.0)],
    "Uni-LSTM": [("masterpiece", 32.0), ("dreadful", 32.0), ("sweetest", 14.0)],
    "RNN": [("pathetic", 8.3), ("dreadful", 6.2), ("brilliant", 5.6)],
}

# Table 2 (Bi-LSTM): negative scores lie in (-1, 0); the most negative is "revelatory", -0.90.
TABLE2_MOST_NEGATIVE = ("revelatory", -0.90)

# Figure 3: R^2 of word frequency against the magnitude of GloVe's 31st and 26th dimensions.
FIGURE3_R_SQUARED = {30: 0.55, 25: 0.27}  # keyed by 0-based column

# Table 7, GloVe rows: test accuracy per training strategy (frequency: mean squared error).
TABLE7_GLOVE = {
    "vanilla": {"prefix": 0.334, "suffix": 0.208, "sentiment": 0.857, "shape": 0.256,
                "frequency_mse": 0.349},
    "without d30": {"prefix": 0.336, "suffix": 0.207, "sentiment": 0.818, "shape": 0.259,
                    "frequency_mse": 0.355},
    "without d30, d25": {"prefix": 0.339, "suffix": 0.209, "sentiment": 0.860, "shape": 0.250,
                         "frequency_mse": 0.413},
    "dropout 0.2": {"prefix": 0.317, "suffix": 0.239, "sentiment": 0.820, "shape": 0.240,
                    "frequency_mse": 0.861},
}
