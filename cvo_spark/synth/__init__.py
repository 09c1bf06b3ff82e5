"""`cvo generate`: the synthetic telco data set (bronze tables and its planted truth)."""
