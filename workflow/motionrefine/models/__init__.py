"""Motion models: RAFT optical flow (``raft``) and the PIPs-style point tracker."""
