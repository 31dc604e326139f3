# coding: utf-8
r"""
@article{Zivanov2019,
  title = "A Bayesian approach to beam-induced motion correction in cryo-EM single-particle analysis",
  author = "Zivanov, Jasenko and Nakane, Takanori and Scheres, Sjors H. W.",
  journal = "IUCrJ",
  volume = "6",
  pages = "5--17",
  year = "2019",
  doi = "http://doi.org/10.1107/S205225251801463X"
}

@article{Kimanius2021,
  title = "Exploiting prior knowledge about biological macromolecules in cryo-EM structure determination",
  author = "Kimanius, Dari and Zickert, Gustav and Nakane, Takanori and Adler, Jonas and Lunz, Sebastian and Sch{\"o}nlieb, Carola-Bibiane and {\"O}ktem, Ozan and Scheres, Sjors H. W.",
  journal = "IUCrJ",
  volume = "8",
  pages = "60--75",
  year = "2021",
  doi = "http://doi.org/10.1107/S2052252520014384"
}

@article{Chen2013,
  title = "High-resolution noise substitution to measure overfitting and validate resolution in 3D structure determination by single particle electron cryomicroscopy",
  author = "Chen, Shaoxia and McMullan, Greg and Faruqi, Abdul R. and Murshudov, Garib N. and Short, Judith M. and Scheres, Sjors H. W. and Henderson, Richard",
  journal = "Ultramicroscopy",
  volume = "135",
  pages = "24--35",
  year = "2013",
  doi = "http://doi.org/10.1016/j.ultramic.2013.06.004"
}

@article{Scheres2012,
  title = "RELION: implementation of a Bayesian approach to cryo-EM structure determination",
  author = "Scheres, Sjors H. W.",
  journal = "J. Struct. Biol.",
  volume = "180",
  pages = "519--530",
  year = "2012",
  doi = "http://doi.org/10.1016/j.jsb.2012.09.006"
}

@article{Scheres2014,
  title = "Beam-induced motion correction for sub-megadalton cryo-EM particles",
  author = "Scheres, Sjors H. W.",
  journal = "eLife",
  volume = "3",
  pages = "e03665",
  year = "2014",
  doi = "http://doi.org/10.7554/eLife.03665"
}

@article{Grant2015,
  title = "Measuring the optimal exposure for single particle cryo-EM using a 2.6 {\AA} reconstruction of rotavirus VP6",
  author = "Grant, Timothy and Grigorieff, Nikolaus",
  journal = "eLife",
  volume = "4",
  pages = "e06980",
  year = "2015",
  doi = "http://doi.org/10.7554/eLife.06980"
}

@article{Romano2017,
  title = "Plug-and-play priors and regularization by denoising (RED)",
  author = "Romano, Yaniv and Elad, Michael and Milanfar, Peyman",
  journal = "SIAM J. Imaging Sci.",
  volume = "10",
  pages = "1804--1844",
  year = "2017",
  doi = "http://doi.org/10.1137/16M1102884"
}

@article{Rubinstein2015,
  title = "Alignment of cryo-EM movies of individual particles by optimization of image translations",
  author = "Rubinstein, John L. and Brubaker, Marcus A.",
  journal = "J. Struct. Biol.",
  volume = "192",
  pages = "188--195",
  year = "2015",
  doi = "http://doi.org/10.1016/j.jsb.2015.08.007"
}

@article{Liu1989,
  title = "On the limited memory BFGS method for large scale optimization",
  author = "Liu, Dong C. and Nocedal, Jorge",
  journal = "Math. Program.",
  volume = "45",
  pages = "503--528",
  year = "1989",
  doi = "http://doi.org/10.1007/BF01589116"
}

@article{Nelder1965,
  title = "A simplex method for function minimization",
  author = "Nelder, John A. and Mead, Roger",
  journal = "Comput. J.",
  volume = "7",
  pages = "308--313",
  year = "1965",
  doi = "http://doi.org/10.1093/comjnl/7.4.308"
}

@article{Rohou2015,
  title = "CTFFIND4: Fast and accurate defocus estimation from electron micrographs",
  author = "Rohou, Alexis and Grigorieff, Nikolaus",
  journal = "J. Struct. Biol.",
  volume = "192",
  pages = "216--221",
  year = "2015",
  doi = "http://doi.org/10.1016/j.jsb.2015.08.008"
}
"""
