package ext

// CheckBuild, when set (by package kafka's init, before any pipeline is built; never changed
// afterwards), is called by pipeline.Build with the pipeline's source and its stages (the
// *stage.Stage values, in link order); a non-nil error is one of Build's errors. Package kafka
// uses it to pair an exactly-once source with its transactional producer's sink.
var CheckBuild func(src any, stages []any) error
