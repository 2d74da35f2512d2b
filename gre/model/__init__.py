"""The model: Caffe's files (deploy prototxt, caffemodel, mean, synset words), image decoding
and preprocessing, the engines, and the classifier a replica runs per batch. Knows nothing of
processes, queues or HTTP."""
