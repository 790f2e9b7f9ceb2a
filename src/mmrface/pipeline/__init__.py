"""mmrface.pipeline"""
