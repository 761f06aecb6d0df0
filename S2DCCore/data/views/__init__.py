"""The pretraining methods' views: S²DC's student/teacher crops (`s2dc`) and their token correspondences
(`correspondence`), Alice's anatomy-matched crops (`alice`, `matching`) and masked inputs (`masking`), and
SwinSSL's augmented views (`swinssl`)."""
