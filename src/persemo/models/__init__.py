"""The ensemble members (CNN on log-mel, BiLSTM on MFCC) and soft voting."""
